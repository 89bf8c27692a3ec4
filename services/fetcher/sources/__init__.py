"""Data-source adapters, one module per kind, behind one small interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from services.fetcher.sources.file import FileSource
from services.fetcher.sources.github import GitHubSource
from services.fetcher.sources.http import HttpSource
from services.fetcher.sources.jira import JiraSource
from services.fetcher.sources.prometheus import PrometheusSource
from shared.events import Source
from shared.settings import Settings


class DataSource(Protocol):
    """Fetches one source's data; raises TransientError or PermanentError naming the cause.

    `configured` is True for a source named in the operator's config file: its URLs are
    trusted; a request's own URLs are checked against PRESSROOM_SOURCE_ALLOW.
    """

    async def fetch(
        self, source: Source, settings: Settings, *, configured: bool = False
    ) -> Any: ...


def default_sources() -> Mapping[str, DataSource]:
    return {
        "http": HttpSource(),
        "file": FileSource(),
        "prometheus": PrometheusSource(),
        "github": GitHubSource(),
        "jira": JiraSource(),
    }
