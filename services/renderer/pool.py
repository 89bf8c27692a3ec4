"""Capped render processes: a timeout per render, a memory cap per process, crash retry and
recycling."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import heapq
import importlib
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from itertools import count
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from services.renderer import fonts, warm
from services.renderer.job import SplitAborted
from shared.errors import PermanentError, RenderTimeout, TransientError
from shared.lanes import RANK
from shared.observe.logging import get_logger
from shared.secretenv import for_templates, only_environment, private_environment, scrub

log = get_logger(__name__)
# The lane of the report being rendered (shared/lanes.py RANK): a free process goes to the most
# urgent render waiting, so an interactive report never waits behind bulk renders already
# queued here — only for a render in progress. Set by `lane` around a report's work.
_rank: ContextVar[int] = ContextVar("render_rank", default=RANK["normal"])


@contextmanager
def lane(priority: str) -> Iterator[None]:
    """The renders of this block wait for a process as work of `priority` does."""
    token = _rank.set(RANK.get(priority, RANK["normal"]))
    try:
        yield
    finally:
        _rank.reset(token)


# A job at least this long is followed by a full collection in its process (CappedPool._call).
COLLECT_AFTER_SECONDS = 1.0


def _collect_failed(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("render process failed while collecting", error=str(future.exception()))


def _worker_init(memory_mb: int, warm_up: bool = True) -> None:
    scrub()  # a template never needs a secret: no delivery, store, bus or signing key here
    _die_with_parent()
    _import_weasyprint()
    # Ctrl-C reaches the whole process group: the renderer decides when its render processes
    # stop, so they leave no KeyboardInterrupt traceback in its log.

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Fonts are configured in every render process; warm ones also load them up front.
    fonts.configure()
    if warm_up:
        # Imports, fonts and the layout engine load once per process, not per report.
        import weasyprint

        weasyprint.HTML(string=fonts.WARM_UP_HTML).write_pdf(font_config=warm.shared_font_config())
    warm.tune_collector()


def _import_weasyprint() -> None:
    """WeasyPrint imported without a compiler run per library name.

    It loads each native library (GObject, Pango, HarfBuzz, fontconfig …) by trying up to six
    names — Windows', macOS' and Linux's spellings — and cffi hands every name it cannot open
    as given to `ctypes.util.find_library`, which on Linux runs `ldconfig -p`, then gcc and
    ld, for each: 38 programs and about 0.35 s of every render process's start where a
    compiler is installed. Each list also holds the library's Linux soname
    (`libpango-1.0.so.0`), which the dynamic loader finds by itself, on its own search path,
    so the look-ups are left out while WeasyPrint loads. Should that not find a library (a
    soname WeasyPrint does not list), the import is made again with them."""
    if sys.platform.startswith("linux") and "weasyprint" not in sys.modules:
        lookup = ctypes.util.find_library
        ctypes.util.find_library = lambda name: None
        try:
            importlib.import_module("weasyprint")
        except OSError:  # imported again below, as WeasyPrint itself would
            for name in [m for m in sys.modules if m.partition(".")[0] == "weasyprint"]:
                del sys.modules[name]
        finally:
            ctypes.util.find_library = lookup
    importlib.import_module("weasyprint")


def _die_with_parent() -> None:
    """A render process must not outlive its renderer, even one killed with SIGKILL."""

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def rss_mib(pid: int) -> float:
    """A process's resident memory in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


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
        # A split's long chunk left garbage here (see CappedPool._after): the split's token; its
        # merge may use the process first, any other job gets the collection before it.
        self.owes_collect: object | None = None

    def collect(self) -> None:
        """A full collection in the process, queued before its next job (see _call)."""
        self.owes_collect = None
        if self.stopped or self.successor is not None:
            return  # about to be retired: its garbage goes with it
        with suppress(RuntimeError, BrokenProcessPool):  # shut down, or dead: shows at its next job
            self.executor.submit(gc.collect).add_done_callback(_collect_failed)

    def alive(self) -> bool:
        return not self.stopped and self.process.is_alive()

    def rss_mb(self) -> float:
        return rss_mib(self.pid)

    def stop(self, kill: bool = False) -> None:
        self.stopped = True
        if kill and self.process.is_alive():
            self.process.kill()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def exit_reason(self) -> str:
        """'signal 11', 'exit code 1' …: how the process ended (it has, or is about to)."""
        self.process.join(timeout=5)
        code = self.process.exitcode
        # The executor's own thread may be reaping it at this moment (our waitpid then finds no
        # child and says nothing): its code is set once that thread is done.
        deadline = time.monotonic() + 30
        while code is None and time.monotonic() < deadline:
            time.sleep(0.05)
            code = self.process.exitcode
        if code is None:
            return "unknown cause"
        return f"signal {-code}" if code < 0 else f"exit code {code}"


class _Crashed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CappedPool:
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
        collect_after: float | None = COLLECT_AFTER_SECONDS,
    ) -> None:
        self.workers = workers
        # None: no collection after long jobs (a one-off CLI pool: its processes exit next).
        self.collect_after = collect_after
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
        loop = asyncio.get_running_loop()
        # Every process the executor starts, synchronously in these two calls, starts with no
        # secret in its environment: the render process, and multiprocessing's resource
        # tracker (started with the executor's first queue, once per renderer).
        # Before the first: render processes may not read this process's environment.
        if not self._all and not private_environment():
            log.warning("render processes could read the renderer's environment (not Linux?)")
        with only_environment(for_templates(os.environ)):
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.memory_mb, self.warm),
            )
            try:
                # Started and warmed now, not during a report.
                started = loop.run_in_executor(executor, os.getpid)
            except BaseException:
                executor.shutdown(wait=False, cancel_futures=True)
                raise
        try:
            await started
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

    async def _call(
        self,
        worker: _Worker,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: float,
        *,
        split: object | None = None,
    ) -> Any:
        started = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(worker.executor, fn, *args)
        try:
            result = await asyncio.wait_for(future, timeout=timeout)
        except BrokenProcessPool:
            raise _Crashed(await asyncio.to_thread(worker.exit_reason)) from None
        except (TimeoutError, asyncio.CancelledError):
            raise  # the process is replaced or killed
        except BaseException:
            self._after(worker, started, split)  # the job failed; its process lives on
            raise
        worker.renders += 1
        self._after(worker, started, split)
        return result

    def _after(self, worker: _Worker, started: float, split: object | None) -> None:
        """A long render leaves its boxes in reference cycles (over a million for a 3,000-row
        table), which the tuned collector (warm.tune_collector) would free only well into the
        process's next render: their memory and the next render's together could reach the
        process's cap. They are freed while the process is idle (a job sent meanwhile waits
        behind it in the process's queue) — for a split's chunks, after the merge that follows
        them (`run(merge_of=split)`), or before any other job given their process (_take)."""
        if self.collect_after is None or time.monotonic() - started < self.collect_after:
            return
        if split is None:
            worker.collect()
        else:
            worker.owes_collect = split

    def _take(self, merge_of: object | None = None) -> _Worker:
        """An idle worker for a job: one of split `merge_of`'s own (its merge), if one is idle; a
        worker that owes a collection gets it queued before the job."""
        mine = [w for w in self._idle if merge_of is not None and w.owes_collect is merge_of]
        worker = mine[-1] if mine else self._idle[-1]
        self._idle.remove(worker)
        if worker.owes_collect is not None and worker.owes_collect is not merge_of:
            worker.collect()
        return worker

    def _settle(self, split: object) -> None:
        """The collections split `split`'s idle processes still owe (its merge is done)."""
        for worker in self._idle:
            if worker.owes_collect is split:
                worker.collect()

    async def _fresh(self, dead: _Worker) -> _Worker:
        """A new process in place of one that died or was killed."""
        dead.stop(kill=True)
        self._all.discard(dead)
        if dead.successor is not None:
            fresh, dead.successor = dead.successor, None
            return fresh
        return await self._spawn()

    async def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        label: str,
        timeout: float | None = None,
        merge_of: object | None = None,
    ) -> Any:
        """`fn(*args)` in a capped process: a timeout kills and replaces the process; a process
        that dies is replaced and `fn` tried once more, then the report fails. `merge_of`:
        the split (the token given to run_group) whose merge this is: it may use the split's
        processes before they collect."""
        await self.start()
        async with self._slots.hold(1):
            worker = self._take(merge_of)
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
                if merge_of is not None:
                    self._settle(merge_of)

    async def run_group(
        self,
        fn: Callable[[Any], Any],
        jobs: list[Any],
        *,
        label: str,
        timeout: Callable[[], float],
        split: object | None = None,
    ) -> list[Any]:
        """`fn(job)` for every job at once, each in its own process (all wait for a free
        process first); one error fails the group: the error of the lowest job, as raised.
        `split`: a token for the split these jobs are the chunks of (see `run`'s `merge_of`)."""
        await self.start()
        async with self._slots.hold(len(jobs)):
            group = [self._take() for _ in jobs]
            try:
                group = [w if w.alive() else await self._fresh(w) for w in group]
                tasks = [
                    asyncio.ensure_future(self._call(w, fn, (job,), timeout(), split=split))
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
            if split is not None:
                self._settle(split)  # no merge follows
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
    return 1 if isinstance(error, SplitAborted) else 0


class Slots:
    """Render processes free to take work: the most urgent lane first (`lane`), first come
    first served within a lane; a group takes several at once (a group waiting for all
    processes is not overtaken by single renders of its lane or a lower one)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        # (-rank, arrival, wanted, future): the head is the most urgent, then the oldest.
        self._waiting: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._arrivals = count()

    @asynccontextmanager
    async def hold(self, wanted: int = 1) -> AsyncIterator[None]:
        wanted = max(1, min(wanted, self.total))
        rank = _rank.get()
        if self.free < wanted or any(-w[0] >= rank for w in self._waiting):
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiter = (-rank, next(self._arrivals), wanted, granted)
            heapq.heappush(self._waiting, waiter)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(wanted)
                else:
                    self._waiting.remove(waiter)
                    heapq.heapify(self._waiting)
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
        while self._waiting and self._waiting[0][2] <= self.free:
            _, _, wanted, granted = heapq.heappop(self._waiting)
            if not granted.done():
                self.free -= wanted
                granted.set_result(None)


async def run_once(fn: Callable[..., Any], *args: Any, label: str, settings: Any) -> Any:
    """Template code run outside a renderer (the CLI, the console): one process with the render
    timeout and memory cap, gone after this job."""
    pool = CappedPool(
        1,
        memory_mb=settings.render_memory_mb,
        timeout=settings.render_timeout,
        warm=False,
        collect_after=None,  # the process exits after this one job
    )
    try:
        return await pool.run(fn, *args, label=label)
    finally:
        await pool.close()


def run_capped(fn: Callable[..., Any], *args: Any, label: str, settings: Any) -> Any:
    """`run_once` from synchronous code (a CLI command)."""
    return asyncio.run(run_once(fn, *args, label=label, settings=settings))
