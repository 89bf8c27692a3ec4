"""`jira` sources: a JQL search, paged with startAt/maxResults; the template gets the issues."""

from __future__ import annotations

import base64
from typing import Any

from services.fetcher.sources.http import credentials_for, get_json, parse_json
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings


class JiraSource:
    async def fetch(self, source: Source, settings: Settings) -> Any:
        extra = source.model_extra or {}
        creds = credentials_for(source, settings, default="jira")
        base = str(extra.get("url") or creds.get("url") or "").rstrip("/")
        jql = extra.get("jql")
        if not base or not isinstance(jql, str):
            raise PermanentError(f"source '{source.name}': jira needs a `url` and a `jql` query")
        headers = {"Accept": "application/json"}
        if creds.get("user") and creds.get("token"):
            pair = f"{creds['user']}:{creds['token']}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif creds.get("token"):
            headers["Authorization"] = f"Bearer {creds['token']}"
        limit = int(extra.get("max_results", 1000))
        fields = extra.get("fields")
        issues: list[Any] = []
        start = 0
        while len(issues) < limit:
            params: dict[str, Any] = {
                "jql": jql,
                "startAt": start,
                "maxResults": min(100, limit - len(issues)),
            }
            if fields:
                params["fields"] = ",".join(fields) if isinstance(fields, list) else fields
            response = await get_json(
                source,
                f"{base}/rest/api/2/search",
                settings=settings,
                params=params,
                headers=headers,
            )
            page = parse_json(source, response)
            batch = page.get("issues", [])
            issues.extend(batch)
            start += len(batch)
            if not batch or start >= int(page.get("total", 0)):
                break
        return issues
