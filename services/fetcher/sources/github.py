"""`github` sources: REST `repo` + `endpoint` + `params`, following `Link` pagination."""

from __future__ import annotations

import re
from typing import Any

from services.fetcher.sources.http import credentials_for, get_json, parse_json
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings

_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
DEFAULT_API = "https://api.github.com"


class GitHubSource:
    async def fetch(self, source: Source, settings: Settings) -> Any:
        extra = source.model_extra or {}
        creds = credentials_for(source, settings, default="github")
        repo, endpoint = extra.get("repo"), str(extra.get("endpoint") or "").strip("/")
        if not isinstance(repo, str) or repo.count("/") != 1 or not endpoint:
            raise PermanentError(
                f"source '{source.name}': github needs `repo: owner/name` and "
                "an `endpoint` such as pulls or issues"
            )
        base = str(extra.get("api_url") or creds.get("api_url") or DEFAULT_API).rstrip("/")
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token := creds.get("token"):
            headers["Authorization"] = f"Bearer {token}"
        max_pages = int(extra.get("max_pages", 10))
        params: dict[str, Any] | None = {"per_page": 100, **dict(extra.get("params") or {})}
        url: str | None = f"{base}/repos/{repo}/{endpoint}"
        items: list[Any] = []
        pages = 0
        while url and pages < max_pages:
            response = await get_json(
                source, url, settings=settings, params=params, headers=headers
            )
            page = parse_json(source, response)
            if not isinstance(page, list):
                return page  # a single object (e.g. endpoint "releases/latest")
            items.extend(page)
            pages += 1
            match = _NEXT.search(response.headers.get("link", ""))
            url, params = (match.group(1), None) if match else (None, None)
        return items
