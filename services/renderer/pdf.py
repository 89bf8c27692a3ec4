"""HTML and PDF rendering in warm worker processes, with a URL fetcher that cannot leave home.

A render job runs Jinja2 and WeasyPrint in a child process (spawned, memory-capped), so CPU
never blocks a service's event loop and a runaway render can be killed without killing the
service. The same `render_job` function runs in-process for `pressroom render`.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from services.renderer import fonts, warm
from shared.errors import PermanentError, RenderTimeout, ResourceBlocked, TransientError
from shared.logging import get_logger
from shared.netpolicy import allow_listed

MAX_ASSET_BYTES = 20 * 1024 * 1024
log = get_logger(__name__)


@dataclass(frozen=True)
class PageDefaults:
    size: str = "A4"
    orientation: str = "portrait"
    margin: str = "18mm"

    def css(self) -> str:
        # Given as a user stylesheet: a template's own @page rules win over it.
        return f"@page {{ size: {self.size} {self.orientation}; margin: {self.margin}; }}"


@dataclass(frozen=True)
class RenderJob:
    templates_dir: str
    template: str
    context: dict[str, Any]
    formats: tuple[str, ...] = ("pdf",)
    page: PageDefaults = field(default_factory=PageDefaults)
    asset_allow: tuple[str, ...] = ()
    max_output_bytes: int = 5 * 1024 * 1024
    cache_dir: str | None = None
    missing_glyphs: str = "fail"  # or "warn": deliver a PDF with empty boxes, log why
    font_dirs: tuple[str, ...] = ()
    # Requests may name only listed templates; `pressroom render PATH` may render any file.
    listed_only: bool = True
    # Long reports: "auto" splits from `split_rows` table rows, "on" whenever possible, "off"
    # never (services/renderer/split.py); the template may say so too.
    split: str = "off"
    split_rows: int = 500
    # The render cache: also return the template's Analysis (from the same call, no other).
    analyse: bool = False


@dataclass(frozen=True)
class Analysis:
    """What the render cache needs to know about a template, found inside a render process."""

    template: str  # the resolved name ("weekly" → "weekly.html")
    version: str
    variables: list[str] | None  # None: the template computes include names (reads anything)
    # The files it reads with their identity (templating.file_stamp): while they are unchanged,
    # so is this analysis. Empty when it computes include names (then it is not kept).
    files: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RenderOutput:
    template_version: str
    html: bytes
    pdf: bytes | None
    html_seconds: float
    pdf_seconds: float
    pages: int
    notices: tuple[str, ...] = ()  # what a person should know although the render succeeded
    chunks: int = 1  # render processes the PDF was laid out in (split.py)
    analysis: Analysis | None = None  # when the job asked for it (RenderJob.analyse)


def _fetcher_class() -> type:
    from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

    class Blocked(FatalURLFetchingError):  # type: ignore[misc]
        pass

    class SafeURLFetcher(URLFetcher):  # type: ignore[misc]
        """Serves files inside the template folder and data: URLs; http(s) only if allowed."""

        def __init__(self, root: Path, allow_hosts: tuple[str, ...]) -> None:
            super().__init__(timeout=10, allow_redirects=False, fail_on_errors=True)
            self.root = root.resolve()
            self.allow_hosts = allow_hosts

        def fetch(self, url: str, headers: Any = None) -> Any:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme == "data":
                return super().fetch(url, headers)
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
                return URLFetcherResponse(url, path.read_bytes(), {"Content-Type": ctype})
            if scheme in ("http", "https") and allow_listed(parts.hostname, self.allow_hosts):
                return super().fetch(url, headers)
            raise Blocked(f"blocked: template tried to fetch '{url}' (not allow-listed)")

    return SafeURLFetcher


_libraries: dict[str, Any] = {}


def template_library(folder: str, cache_dir: str | None = None) -> Any:
    from services.renderer.templating import TemplateLibrary

    if folder not in _libraries:
        cache = Path(cache_dir) if cache_dir else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        _libraries[folder] = TemplateLibrary(Path(folder), cache_dir=cache)
    return _libraries[folder]


def _resolve(library: Any, job: RenderJob) -> str:
    name: str = (
        library.resolve(job.template) if job.listed_only else library.check_name(job.template)
    )
    return name


def analyse_job(job: RenderJob) -> Analysis:
    """Version and cache variables of the job's template (compiles it: capped process only)."""
    library = template_library(job.templates_dir, job.cache_dir)
    return _analysis(library, _resolve(library, job))


def _analysis(library: Any, name: str) -> Analysis:
    facts = library.facts(name)  # kept per process until a file of the template changes
    variables = None if facts.dynamic else list(facts.variables)
    files = () if facts.dynamic else facts.files
    return Analysis(name, facts.version, variables, files)


def job_analysis(job: RenderJob, name: str) -> Analysis | None:
    """The Analysis a job asked for (RenderJob.analyse), found in the render's own call."""
    if not job.analyse:
        return None
    return _analysis(template_library(job.templates_dir, job.cache_dir), name)


def render_job(job: RenderJob) -> RenderOutput:
    """Template → HTML → PDF. Raises PermanentError subclasses with a one-line reason."""
    name, version, html, html_seconds = render_html(job)
    output = pdf_output(job, name, version, html, html_seconds)
    return replace(output, analysis=job_analysis(job, name)) if job.analyse else output


def render_html(job: RenderJob) -> tuple[str, str, str, float]:
    """The template's name, version and HTML, and the seconds Jinja took."""
    library = template_library(job.templates_dir, job.cache_dir)
    name = _resolve(library, job)
    version = library.version(name)
    started = time.perf_counter()
    html = library.render(name, job.context)
    return name, version, html, time.perf_counter() - started


def base_folder(job: RenderJob, name: str) -> Path:
    """Where the template's relative asset URLs resolve from."""
    library = template_library(job.templates_dir, job.cache_dir)
    return Path(library.folder / Path(name).parent)


def pdf_output(
    job: RenderJob, name: str, version: str, html: str, html_seconds: float
) -> RenderOutput:
    """The one-piece PDF of rendered HTML, with the output-size check."""
    html_bytes = html.encode("utf-8")
    pdf: bytes | None = None
    pages = 0
    pdf_seconds = 0.0
    notices: tuple[str, ...] = ()
    if "pdf" in job.formats:
        started = time.perf_counter()
        pdf, pages, notices = _html_to_pdf(html, base_folder(job, name), job, f"{name}@{version}")
        pdf_seconds = time.perf_counter() - started
    check_output_size(job, html_bytes if "html" in job.formats else None, pdf)
    return RenderOutput(version, html_bytes, pdf, html_seconds, pdf_seconds, pages, notices)


def check_output_size(job: RenderJob, html: bytes | None, pdf: bytes | None) -> None:
    for fmt, data in (("html", html), ("pdf", pdf)):
        if data is not None and len(data) > job.max_output_bytes:
            raise PermanentError(
                f"{fmt} output is {len(data):,} bytes, over the {job.max_output_bytes:,}-byte limit"
            )


@contextmanager
def weasyprint_errors() -> Iterator[None]:
    """WeasyPrint's failures as Pressroom's, for whole and split renders alike: an asset the
    fetcher refused, and a render that ran out of memory."""
    from weasyprint.urls import FatalURLFetchingError

    try:
        yield
    except FatalURLFetchingError as error:
        cause = error.__cause__ or error
        raise ResourceBlocked(str(cause.args[0] if cause.args else cause)) from None
    except MemoryError:
        raise PermanentError("render ran out of memory (input too large?)") from None


def _html_to_pdf(
    html: str, base: Path, job: RenderJob, scope: str
) -> tuple[bytes, int, tuple[str, ...]]:
    """The PDF, with the process's warm fonts and stylesheets (warm.py); `scope` names the
    template version whose own @font-face fonts, if any, are kept apart from others'."""
    fonts.configure(job.font_dirs)
    from weasyprint import HTML

    warm.install_stylesheet_cache()
    fetcher = _fetcher_class()(Path(job.templates_dir), job.asset_allow)

    def render(font_config: Any) -> tuple[Any, bytes | None]:
        with fonts.glyph_watch() as seen:
            document = HTML(string=html, base_url=f"{base.resolve()}/", url_fetcher=fetcher).render(
                stylesheets=[warm.page_css(job.page.css(), fetcher)], font_config=font_config
            )
            pdf = document.write_pdf()
        missing.update(seen)
        return document, pdf

    missing: Counter[int] = Counter()
    with weasyprint_errors():
        document, pdf = warm.with_fonts(scope, render)
    assert pdf is not None
    # After the render, not during it: a report with boxes is never delivered, and the reason
    # lists every character at once.
    warning = fonts.check_missing(missing, "warn" if job.missing_glyphs == "warn" else "fail")
    return pdf, len(document.pages), (warning,) if warning else ()


def _worker_init(memory_mb: int, warm_up: bool = True) -> None:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the renderer decides when its render processes
    # stop, so they leave no KeyboardInterrupt traceback in its log.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb > 0:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Fonts are configured in every render process; warm ones also load them up front.
    fonts.configure()
    if warm_up:
        # Imports, fonts and the layout engine load once per process, not per report.
        import weasyprint

        weasyprint.HTML(string=fonts.WARM_UP_HTML).write_pdf(
            font_config=warm.shared_font_config()
        )


def _die_with_parent() -> None:
    """A render process must not outlive its renderer, even one killed with SIGKILL."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class RenderPool:
    """A pool of warm render processes; a render over its timeout is killed and replaced."""

    def __init__(
        self, workers: int = 1, *, memory_mb: int = 2048, timeout: float = 120.0, warm: bool = True
    ) -> None:
        self.workers = workers
        self.memory_mb = memory_mb
        self.timeout = timeout
        self.warm = warm
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()
        # Renders wait here, untimed, for a free process: the timeout counts rendering only.
        self._slots = Slots(workers)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.memory_mb, self.warm),
        )

    async def start(self) -> None:
        if not fonts.harfbuzz_subset_available():
            # Said once per renderer, instead of WeasyPrint's line per font per render.
            log.warning(
                "fonts are subset with fontTools",
                hint="install HarfBuzz-Subset (Debian: libharfbuzz-subset0): renders take ~1/4 "
                "of the CPU, and 10-25 s less with Chinese, Japanese or Korean text",
            )
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        # Start (and warm) every worker now rather than on the first report.
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, os.getpid) for _ in range(self.workers))
        )

    async def render(self, job: RenderJob) -> RenderOutput:
        # A long report may be laid out by several processes at once (split.py).
        from services.renderer.split import render

        return await render(self, job)

    async def analyse(self, job: RenderJob) -> Analysis:
        analysis: Analysis = await self.run(analyse_job, job, label=job.template)
        return analysis

    async def run(
        self, fn: Callable[..., Any], *args: Any, label: str, timeout: float | None = None
    ) -> Any:
        """`fn(*args)` in a capped process: a timeout kills and replaces the process."""
        if self._pool is None:
            await self.start()
        async with self._slots.hold(1):
            pool = self._pool
            assert pool is not None
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(pool, fn, *args)
            try:
                return await asyncio.wait_for(future, timeout=timeout or self.timeout)
            except TimeoutError:
                await self._replace(pool)
                raise RenderTimeout(
                    f"render of '{label}' took longer than {self.timeout:g}s and was stopped"
                ) from None
            except BrokenProcessPool:
                await self._replace(pool)
                raise TransientError(
                    "render worker died (killed, or over the memory limit); will retry"
                ) from None

    async def run_group(
        self,
        fn: Callable[[Any], Any],
        jobs: list[Any],
        *,
        label: str,
        timeout: Callable[[], float],
    ) -> list[Any]:
        """`fn(job)` for every job at once, each in its own process (all wait for a free
        process first); one error fails the group: the error of the lowest job, as raised."""
        if self._pool is None:
            await self.start()
        async with self._slots.hold(len(jobs)):
            pool = self._pool
            assert pool is not None
            loop = asyncio.get_running_loop()
            futures = [loop.run_in_executor(pool, fn, job) for job in jobs]
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*futures, return_exceptions=True), timeout=timeout()
                )
            except TimeoutError:
                await self._replace(pool)
                raise RenderTimeout(
                    f"render of '{label}' took longer than {self.timeout:g}s and was stopped"
                ) from None
        errors = [r for r in results if isinstance(r, BaseException)]
        if any(isinstance(e, BrokenProcessPool) for e in errors):
            await self._replace(pool)
            raise TransientError(
                "render worker died (killed, or over the memory limit); will retry"
            )
        if errors:
            raise min(errors, key=_group_error_rank)
        return results

    async def _replace(self, broken: ProcessPoolExecutor) -> None:
        async with self._lock:
            if self._pool is not broken:
                return
            for process in list((getattr(broken, "_processes", None) or {}).values()):
                process.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _group_error_rank(error: BaseException) -> int:
    # The chunks that stopped because another failed say nothing new: the first real error.
    return 1 if type(error).__name__ == "SplitAborted" else 0


class Slots:
    """Render processes free to take work; a group takes several at once, first come first
    served (a group waiting for all processes is not overtaken by single renders)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @asynccontextmanager
    async def hold(self, wanted: int = 1) -> AsyncIterator[None]:
        wanted = max(1, min(wanted, self.total))
        if self._waiting or self.free < wanted:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((wanted, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(wanted)
                else:
                    self._waiting.remove((wanted, granted))
                    self._release(0)
                raise
        else:
            self.free -= wanted
        try:
            yield
        finally:
            self._release(wanted)

    def _release(self, count: int) -> None:
        self.free += count
        while self._waiting and self._waiting[0][0] <= self.free:
            wanted, granted = self._waiting.popleft()
            if not granted.done():
                self.free -= wanted
                granted.set_result(None)


def run_capped(fn: Callable[..., Any], *args: Any, label: str, settings: Any) -> Any:
    """Template code run from the CLI: one process with the render timeout and memory cap."""

    async def once() -> Any:
        pool = RenderPool(
            1, memory_mb=settings.render_memory_mb, timeout=settings.render_timeout, warm=False
        )
        try:
            return await pool.run(fn, *args, label=label)
        finally:
            await pool.close()

    return asyncio.run(once())
