"""`github` sources: REST `repo` + `endpoint` + `params`, following same-origin `Link` pages."""

from __future__ import annotations

import re
from typing import Any

from services.fetcher.access import (
    PUBLIC_DEFAULTS,
    check_bound,
    credential_base,
    credential_for,
    destination,
    get_json,
)
from shared.adapters import egress
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings

# Possessive and stopping at the next `<`: linear on a hostile Link header.
_NEXT = re.compile(r'<([^<>]++)>;\s*+rel="next"')
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_ENDPOINT = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")  # no query, no fragment
DEFAULT_API = PUBLIC_DEFAULTS["github"]


def _positive(source: Source, value: Any, option: str, default: int) -> int:
    try:
        number = int(default if value is None else value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise PermanentError(f"source '{source.name}': `{option}` must be a positive integer")
    return number


class GitHubSource:
    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        extra = source.model_extra or {}
        credential = credential_for(source, settings)
        repo, endpoint = extra.get("repo"), str(extra.get("endpoint") or "").strip("/")
        if (
            not isinstance(repo, str)
            or not _REPO.match(repo)
            or not _ENDPOINT.match(endpoint)
            or ".." in endpoint.split("/")
        ):
            raise PermanentError(
                f"source '{source.name}': github needs `repo: owner/name` and "
                "an `endpoint` such as pulls or issues"
            )
        given = extra.get("api_url")
        base = str(given or credential_base(credential) or DEFAULT_API).rstrip("/")
        # The public API (no api_url given) is a built-in default, not a request's choice.
        target = await destination(
            f"{base}/repos/{repo}/{endpoint}",
            source,
            settings,
            configured=configured or not given,
            credential=credential,
        )
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        max_pages = _positive(source, extra.get("max_pages"), "max_pages", 10)
        params: dict[str, Any] | None = {"per_page": 100, **dict(extra.get("params") or {})}
        items: list[Any] = []
        for _ in range(max_pages):
            page, reply = await get_json(
                source,
                target,
                settings=settings,
                credential=credential,
                params=params,
                headers=headers,
            )
            if not isinstance(page, list):
                return page  # a single object (e.g. endpoint "releases/latest")
            items.extend(page)
            match = _NEXT.search(reply.headers.get("link", ""))
            if not match:
                break
            following = match.group(1)
            if egress.origin_of(following) != target.origin:
                raise PermanentError(
                    f"source '{source.name}': next page at {egress.origin_of(following)} is on "
                    f"another origin than {target.origin}; not followed"
                )
            check_bound(credential, following, f"source '{source.name}' (next page)")
            target = egress.Destination(following, target.origin, target.address)
            params = None
        return items
