"""WeasyPrint's sandbox: the URL fetcher that reads only the template folder's own assets (and
allow-listed hosts), the output cap, and WeasyPrint's errors mapped to Pressroom's."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from services.renderer import assets
from services.renderer.exports import Export
from services.renderer.job import RenderJob
from shared.adapters.netpolicy import allow_listed
from shared.errors import PermanentError, ResourceBlocked, TemplateError

MAX_ASSET_BYTES = 20 * 1024 * 1024


def fetcher_class() -> type:
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

    class Blocked(FatalURLFetchingError):  # type: ignore[misc]
        pass

    class SafeURLFetcher(URLFetcher):  # type: ignore[misc]
        """Serves files inside the template folder and data: URLs; http(s) only if allowed."""

        def __init__(self, root: Path, allow_hosts: tuple[str, ...]) -> None:
            self.seconds = 10.0  # each read, and all of an asset's body
            super().__init__(timeout=self.seconds, allow_redirects=False, fail_on_errors=True)
            self.root = root.resolve()
            self.allow_hosts = allow_hosts

        def fetch(self, url: str, headers: Any = None) -> Any:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme == "data":  # from a template or from request data: capped like a file
                body, media = assets.read_data_url(url, MAX_ASSET_BYTES)
                assets.check_image(body, media, assets.describe(url), MAX_ASSET_BYTES)
                return URLFetcherResponse(url, body, {"Content-Type": media})
            if scheme == "file":
                path = Path(unquote(parts.path)).resolve()
                if not path.is_relative_to(self.root):
                    raise Blocked("blocked: template tried to read a file outside its folder")
                if any(p.startswith(".") for p in path.relative_to(self.root).parts):
                    raise Blocked("blocked: template tried to read a hidden file")
                if not path.is_file():
                    raise Blocked(f"asset not found: '{path.relative_to(self.root)}'")
                if path.stat().st_size > MAX_ASSET_BYTES:
                    raise Blocked(f"asset too large: '{path.relative_to(self.root)}'")
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                body = path.read_bytes()
                where = f"'{path.relative_to(self.root)}'"
                assets.check_image(body, ctype, where, MAX_ASSET_BYTES)
                return URLFetcherResponse(url, body, {"Content-Type": ctype})
            if scheme in ("http", "https") and allow_listed(parts.hostname, self.allow_hosts):
                response = super().fetch(url, headers)
                where = assets.describe(url)
                with closing(response):
                    body = assets.read_capped(response, MAX_ASSET_BYTES, self.seconds, where)
                assets.check_image(body, response.content_type, where, MAX_ASSET_BYTES)
                return URLFetcherResponse(response.url, body, response.headers, response.status)
            raise Blocked(f"blocked: template tried to fetch '{url}' (not allow-listed)")

    return SafeURLFetcher


_fetchers: dict[tuple[str, tuple[str, ...]], Any] = {}


def warm_fetcher(templates_dir: str, allow: tuple[str, ...]) -> Any:
    """The process's URL fetcher for a templates folder and allow-list (building one sets up
    urllib's handlers and an SSL context: milliseconds per render). It keeps no state between
    fetches, and a process renders one report at a time."""
    key = (templates_dir, allow)
    fetcher = _fetchers.get(key)
    if fetcher is None:
        if len(_fetchers) >= 16:
            _fetchers.clear()
        fetcher = _fetchers[key] = fetcher_class()(Path(templates_dir), allow)
    return fetcher


def check_output_size(
    job: RenderJob, html: bytes | None, pdf: bytes | None, exports: tuple[Export, ...] = ()
) -> None:
    named = [("html", html), ("pdf", pdf)]
    named += [(f"{e.name}.{e.format}" if e.name else e.format, e.content) for e in exports]
    for fmt, data in named:
        if data is not None and len(data) > job.max_output_bytes:
            raise PermanentError(
                f"{fmt} output is {len(data):,} bytes, over the {job.max_output_bytes:,}-byte limit"
            )


# What WeasyPrint raises from inside its layout for markup it does not handle (a positioned
# element or a `::marker` in a table cell: "min-content width for TextBox not handled yet").
_ENGINE_FAILURES = (
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    AssertionError,
    ArithmeticError,
    NotImplementedError,
)


@contextmanager
def engine_failures() -> Iterator[None]:
    """A whole render's unexpected error from WeasyPrint as the template's error, in one line
    (the service dead-letters it with this reason, the CLI prints it): it is the document's,
    and rendering it again gives the same. Not for a split's chunks: an error there falls back
    to rendering in one piece (split.py)."""
    try:
        yield
    except _ENGINE_FAILURES as error:  # Pressroom's own errors are none of these
        what = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise TemplateError(f"WeasyPrint could not lay this document out ({what})") from None


@contextmanager
def weasyprint_errors() -> Iterator[None]:
    """WeasyPrint's failures as Pressroom's, for whole and split renders alike: an asset the
    fetcher refused, SVG drawing over its budget, and a render that ran out of memory."""
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint.urls import FatalURLFetchingError

    try:
        with assets.svg_budget():
            yield
    except assets.AssetRefused as error:
        raise ResourceBlocked(str(error)) from None
    except FatalURLFetchingError as error:
        cause = error.__cause__ or error
        raise ResourceBlocked(str(cause.args[0] if cause.args else cause)) from None
    except MemoryError:
        raise PermanentError("render ran out of memory (input too large?)") from None
