"""`jira` sources: a JQL search, paged with startAt/maxResults; the template gets the issues."""

from __future__ import annotations

from typing import Any

from services.fetcher.access import credential_base, credential_for, destination, get_json
from services.fetcher.sources.github import _positive
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings


class JiraSource:
    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        extra = source.model_extra or {}
        credential = credential_for(source, settings)
        base = str(extra.get("url") or credential_base(credential) or "").rstrip("/")
        jql = extra.get("jql")
        if not base or not isinstance(jql, str):
            raise PermanentError(f"source '{source.name}': jira needs a `url` and a `jql` query")
        target = await destination(
            f"{base}/rest/api/2/search",
            source,
            settings,
            configured=configured,
            credential=credential,
        )
        limit = _positive(source, extra.get("max_results"), "max_results", 1000)
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
            page, _ = await get_json(
                source,
                target,
                settings=settings,
                credential=credential,
                params=params,
                headers={"Accept": "application/json"},
            )
            batch = page.get("issues", []) if isinstance(page, dict) else []
            if not isinstance(batch, list):
                raise PermanentError(f"source '{source.name}': jira answered without `issues`")
            issues.extend(batch)
            start += len(batch)
            total = page.get("total", 0) if isinstance(page, dict) else 0
            if not batch or start >= (int(total) if isinstance(total, int | str) else 0):
                break
        return issues
