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
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from services.renderer import assets, fonts, warm
from shared.adapters.netpolicy import allow_listed
from shared.errors import PermanentError, RenderTimeout, ResourceBlocked, TransientError
from shared.observe.logging import get_logger

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
        fetcher = _fetchers[key] = _fetcher_class()(Path(templates_dir), allow)
    return fetcher


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
    _crash_if_asked(html)
    return name, version, html, time.perf_counter() - started


# Test-only fault injection: a render process whose environment names a marker dies of SIGSEGV
# on any report whose HTML contains it (tests/faults/test_renders.py: a renderer that crashes
# on a report every time). Unset in production.
CRASH_MARKER_ENV = "TEST_RENDER_CRASH_MARKER"  # not PRESSROOM_*: not a setting


def _crash_if_asked(html: str) -> None:
    marker = os.environ.get(CRASH_MARKER_ENV)
    if marker and marker in html:
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)


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
    fetcher refused, SVG drawing over its budget, and a render that ran out of memory."""
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


def _html_to_pdf(
    html: str, base: Path, job: RenderJob, scope: str
) -> tuple[bytes, int, tuple[str, ...]]:
    """The PDF, with the process's warm fonts and stylesheets (warm.py); `scope` names the
    template version whose own @font-face fonts, if any, are kept apart from others'."""
    fonts.configure(job.font_dirs)
    from weasyprint import HTML

    warm.install_stylesheet_cache()
    fetcher = warm_fetcher(job.templates_dir, job.asset_allow)

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
    from shared.secretenv import scrub

    scrub()  # a template never needs a secret: no delivery, store, bus or signing key here
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

        weasyprint.HTML(string=fonts.WARM_UP_HTML).write_pdf(font_config=warm.shared_font_config())


def _die_with_parent() -> None:
    """A render process must not outlive its renderer, even one killed with SIGKILL."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class _Worker:
    """One warm render process (an executor of one, so it can be retired on its own)."""

    def __init__(self, executor: ProcessPoolExecutor, process: Any) -> None:
        self.executor = executor
        self.process = process
        self.pid: int = process.pid
        self.renders = 0
        self.successor: _Worker | None = None  # a warm replacement, waiting to take over
        self.replacing = False
        self.stopped = False

    def alive(self) -> bool:
        return not self.stopped and self.process.is_alive()

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return 0.0

    def stop(self, kill: bool = False) -> None:
        self.stopped = True
        if kill and self.process.is_alive():
            self.process.kill()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def exit_reason(self) -> str:
        """'signal 11', 'exit code 1' …: how the process ended (it has, or is about to)."""
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is None:
            return "unknown cause"
        return f"signal {-code}" if code < 0 else f"exit code {code}"


class _Crashed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RenderPool:
    """Warm render processes, each its own executor: a render over its timeout is killed and
    its process replaced; a process that dies mid-render (segfault, OOM kill) is replaced and
    the render tried once more in the fresh one; a process past `max_renders` renders or
    `max_rss_mb` of memory is retired between jobs, once its warm replacement is ready."""

    def __init__(
        self,
        workers: int = 1,
        *,
        memory_mb: int = 2048,
        timeout: float = 120.0,
        warm: bool = True,
        max_renders: int = 0,
        max_rss_mb: int = 0,
    ) -> None:
        self.workers = workers
        self.memory_mb = memory_mb
        self.timeout = timeout
        self.warm = warm
        self.max_renders = max_renders
        self.max_rss_mb = max_rss_mb
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        # Renders wait here, untimed, for a free process: the timeout counts rendering only.
        self._slots = Slots(workers)

    async def _spawn(self) -> _Worker:
        executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.memory_mb, self.warm),
        )
        loop = asyncio.get_running_loop()
        try:
            # Started and warmed now, not during a report.
            await loop.run_in_executor(executor, os.getpid)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        process = next(iter((getattr(executor, "_processes", None) or {}).values()))
        worker = _Worker(executor, process)
        self._all.add(worker)
        return worker

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if not fonts.harfbuzz_subset_available():
                # Said once per renderer, instead of WeasyPrint's line per font per render.
                log.warning(
                    "fonts are subset with fontTools",
                    hint="install HarfBuzz-Subset (Debian: libharfbuzz-subset0): renders take "
                    "~1/4 of the CPU, and 10-25 s less with Chinese, Japanese or Korean text",
                )
            # Start (and warm) every worker now rather than on the first report.
            self._idle = list(await asyncio.gather(*(self._spawn() for _ in range(self.workers))))
            self._started = True

    def pids(self) -> list[int]:
        """The render processes' ids (idle and busy)."""
        return sorted(w.pid for w in self._all)

    async def render(self, job: RenderJob) -> RenderOutput:
        # A long report may be laid out by several processes at once (split.py).
        from services.renderer.split import render

        return await render(self, job)

    async def analyse(self, job: RenderJob) -> Analysis:
        analysis: Analysis = await self.run(analyse_job, job, label=job.template)
        return analysis

    async def _call(
        self, worker: _Worker, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float
    ) -> Any:
        future = asyncio.get_running_loop().run_in_executor(worker.executor, fn, *args)
        try:
            result = await asyncio.wait_for(future, timeout=timeout)
        except BrokenProcessPool:
            raise _Crashed(await asyncio.to_thread(worker.exit_reason)) from None
        worker.renders += 1
        return result

    async def _fresh(self, dead: _Worker) -> _Worker:
        """A new process in place of one that died or was killed."""
        dead.stop(kill=True)
        self._all.discard(dead)
        if dead.successor is not None:
            fresh, dead.successor = dead.successor, None
            return fresh
        return await self._spawn()

    async def run(
        self, fn: Callable[..., Any], *args: Any, label: str, timeout: float | None = None
    ) -> Any:
        """`fn(*args)` in a capped process: a timeout kills and replaces the process; a process
        that dies is replaced and `fn` tried once more, then the report fails."""
        await self.start()
        async with self._slots.hold(1):
            worker = self._idle.pop()
            try:
                crashes = 0
                while True:
                    if not worker.alive():  # stopped when a render was given up on
                        worker = await self._fresh(worker)
                    try:
                        return await self._call(worker, fn, args, timeout or self.timeout)
                    except asyncio.CancelledError:
                        # Given up on (the report's own timeout, a shutdown): stop the render
                        # too, rather than leave a process busy for nobody; the next job
                        # replaces it.
                        worker.stop(kill=True)
                        raise
                    except TimeoutError:
                        worker = await self._fresh(worker)
                        raise RenderTimeout(
                            f"render of '{label}' took longer than {self.timeout:g}s and was "
                            "stopped"
                        ) from None
                    except _Crashed as crash:
                        crashes += 1
                        log.warning(
                            "render process crashed",
                            template=label,
                            reason=crash.reason,
                            retry=crashes < 2,
                        )
                        worker = await self._fresh(worker)
                        if crashes >= 2:
                            raise PermanentError(
                                f"the renderer crashed ({crash.reason}) on this report twice"
                            ) from None
            finally:
                self._give_back(worker)

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
        await self.start()
        async with self._slots.hold(len(jobs)):
            group = [self._idle.pop() for _ in jobs]
            try:
                group = [w if w.alive() else await self._fresh(w) for w in group]
                tasks = [
                    asyncio.ensure_future(self._call(w, fn, (job,), timeout()))
                    for w, job in zip(group, jobs, strict=True)
                ]
                pending: set[asyncio.Future[Any]] = set(tasks)
                while pending:
                    try:
                        done, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
                    except asyncio.CancelledError:  # as in `run`: no process left busy
                        for worker in group:
                            worker.stop(kill=True)
                        raise
                    if any(isinstance(t.exception(), _Crashed) for t in done):
                        # The others would wait for the dead one's pages until the deadline.
                        for other in group:
                            other.stop(kill=True)
                results = [t.exception() or t.result() for t in tasks]
                if any(isinstance(r, TimeoutError) for r in results):
                    group = [await self._fresh(w) for w in group]
                    raise RenderTimeout(
                        f"render of '{label}' took longer than {self.timeout:g}s and was stopped"
                    )
                if any(isinstance(r, _Crashed) for r in results):
                    # The others wait for the dead one's pages: every process of the group goes.
                    group = [await self._fresh(w) for w in group]
                    raise TransientError(
                        "render worker died (killed, or over the memory limit); will retry"
                    )
            finally:
                for worker in group:
                    self._give_back(worker)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise min(errors, key=_group_error_rank)
        return results

    def _give_back(self, worker: _Worker) -> None:
        """Back to the idle list between jobs — or its warm successor, if one is ready."""
        successor = worker.successor
        if successor is not None:
            worker.successor = None
            self._retire(worker)
            worker = successor
        elif not worker.replacing and self._due(worker):
            worker.replacing = True
            task = asyncio.get_running_loop().create_task(self._replace_later(worker))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._idle.append(worker)

    def _due(self, worker: _Worker) -> bool:
        if self.max_renders and worker.renders >= self.max_renders:
            return True
        return bool(self.max_rss_mb) and worker.rss_mb() > self.max_rss_mb

    async def _replace_later(self, old: _Worker) -> None:
        """Warm a successor while `old` goes on rendering; it takes over between jobs."""
        try:
            new = await self._spawn()
        except Exception as error:  # old keeps serving; tried again after its next job
            old.replacing = False
            log.warning("could not start a render process", error=str(error))
            return
        if old not in self._all:  # replaced meanwhile (it crashed): not needed
            new.stop()
            self._all.discard(new)
            return
        log.info(
            "render process recycled", pid=old.pid, renders=old.renders, rss_mb=round(old.rss_mb())
        )
        if old in self._idle:
            self._idle[self._idle.index(old)] = new
            self._retire(old)
        else:
            old.successor = new

    def _retire(self, worker: _Worker) -> None:
        self._all.discard(worker)
        worker.stop()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for worker in list(self._all):
            successor = worker.successor
            if successor is not None:
                successor.executor.shutdown(wait=True, cancel_futures=True)
            worker.executor.shutdown(wait=True, cancel_futures=True)
        self._all.clear()
        self._idle.clear()
        self._started = False


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
