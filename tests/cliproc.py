"""`pressroom` commands for the tests — one-off commands and the stacks' workers — each in a
process of its own, forked from one that has already imported the libraries every command
imports.

A `pressroom` command spends about 0.6 s of CPU importing Typer, Rich, pydantic, nats,
structlog, OpenTelemetry … before it does anything, and the suite runs several hundred commands
and workers on two cores. Here each pytest process keeps a *zygote*: an interpreter, started
the way a command is (same interpreter, same start-up environment), that has imported those
third-party modules and nothing of Pressroom. A command is a fork of it that takes the caller's
environment, folder, argv and standard streams, then runs `python -m services.console.cli`
exactly as the interpreter does (`runpy`), so every Pressroom module is imported afresh with the
caller's settings, and exits through the interpreter's own exit (atexit, flushes, exit code).
`run` gives what `subprocess.run(capture_output=True, text=True)` gives: the exit code
(negative for a signal), stdout and stderr, `TimeoutExpired` after killing the command's
process group. `start` gives a `Forked`, used as a `subprocess.Popen` is.

What a fork cannot reproduce is a start-up that depends on the environment: a variable read
when the interpreter starts (PYTHON*, the locale) or when one of those libraries is imported
(OTEL_PROPAGATORS, FORCE_COLOR …). Those variables are the zygote's key: a call whose values
differ gets a zygote of its own. Nor what the kernel keeps from the exec: a forked process's
`/proc/<pid>/environ` and `cmdline` are the zygote's (a test that reads them starts its
processes with `fork=False`). Every fork of one zygote has the same string hash seed, and has
the preloaded modules loaded whether it needs them or not, so a missing import or a worker
that loads the CLI's libraries would not show here: tests/unit/test_cli_startup.py checks
those in fresh interpreters. `TESTS_FORK_CLI=0` execs every command afresh instead (slower;
the same results, with fresh hash seeds).

Run as a script, this file is the zygote.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import runpy
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import IO, Any, Protocol

REPO = Path(__file__).resolve().parent.parent
MODULE = "services.console.cli"
# Not preloaded: what is imported afresh in each command, with the caller's settings.
OWN = ("services", "shared", "templates", "tests", "bench", "deploy", "scripts")
# Read when the interpreter starts or when a preloaded library is imported.
STARTUP_PREFIXES = ("PYTHON", "LC_", "OTEL_PYTHON_", "_TYPER_")
STARTUP_NAMES = frozenset(
    {"LANG", "TZ", "TMPDIR", "OTEL_PROPAGATORS", "TYPER_USE_RICH", "TERMINAL_WIDTH",
     "FORCE_COLOR", "PY_COLORS", "NO_COLOR", "GITHUB_ACTIONS"}
)  # fmt: skip
# What a command imports, listed in a throwaway interpreter (a module imported for a list like
# this may register itself somewhere): every command module, and the renderer for `render`.
DISCOVER = f"""
import sys
import {MODULE} as cli
cli.build()
import services.renderer.job
own = {OWN!r}
for name, module in list(sys.modules.items()):
    if module is not None and name.split(".")[0] not in own and not name.startswith("__"):
        print(name)
"""


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` a fork cannot change after the fact."""
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES) or k in STARTUP_NAMES}


def forking() -> bool:
    return os.environ.get("TESTS_FORK_CLI", "1") != "0" and _can_fork()


@cache
def _can_fork() -> bool:
    """pidfds (Linux 5.3) and fd passing: elsewhere every command is exec'd afresh."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return hasattr(socket, "send_fds")


def run(
    args: list[str] | tuple[str, ...],
    *,
    env: Mapping[str, str],
    cwd: Path | str = REPO,
    input: str | None = None,
    timeout: float = 300,
    check: bool = False,
    fork: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`python -m services.console.cli *args` with `env` (all of it: nothing of this process's
    environment is added), in `cwd`, `input` on stdin (else /dev/null), its output captured.
    `fork=False`: exec'd afresh."""
    argv = [sys.executable, "-m", MODULE, *args]
    if not (fork and forking()):
        return subprocess.run(
            argv, env=dict(env), cwd=cwd, input=input, capture_output=True, text=True,
            timeout=timeout, check=check, stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
    zygote = _zygote(startup_env(env))
    # Pipes, as subprocess.run's: the call ends when the output closes, not only when the
    # command exits (a daemon it leaves holding stdout hangs here as in a user's `$(…)`).
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        with tempfile.TemporaryFile() as given:
            if input is not None:
                given.write(input.encode())
                given.seek(0)
            stdin = given.fileno() if input is not None else None
            proc = zygote.launch(argv, dict(env), str(cwd), stdin, out_w, err_w)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    output: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        if not _drain(output, deadline):
            timed_out = True
            _kill_group(proc.pid)
            # What it wrote so far; a process outside its group may hold the pipes for ever
            # (subprocess.run, too, does not read on after its kill).
            _drain(output, time.monotonic() + 5)
        try:
            code = proc.wait(max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            code = proc.wait()
    except BaseException:  # pytest-timeout, Ctrl-C: not left running, as subprocess.run does
        _kill_group(proc.pid)
        raise
    finally:
        os.close(out_r)
        os.close(err_r)
    stdout, stderr = _text(b"".join(output[out_r])), _text(b"".join(output[err_r]))
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
    if check and code:
        raise subprocess.CalledProcessError(code, argv, stdout, stderr)
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


def _drain(output: dict[int, list[bytes]], deadline: float | None) -> bool:
    """Read every pipe of `output` to its end: False if `deadline` came first."""
    with selectors.DefaultSelector() as selector:
        for fd, chunks in output.items():
            selector.register(fd, selectors.EVENT_READ, chunks)
        while selector.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return False
            for key, _ in selector.select(wait):
                data = os.read(key.fd, 1 << 16)
                if data:
                    key.data.append(data)
                else:
                    selector.unregister(key.fd)
    return True


def _kill_group(pid: int) -> None:
    """The command and what it started: it leads a process group of its own, which outlives
    it as long as one of them runs."""
    with suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _text(data_: bytes) -> str:
    """What `text=True` makes of a stream: the locale's encoding, universal newlines."""
    data = data_.decode(locale.getpreferredencoding(False))
    return data.replace("\r\n", "\n").replace("\r", "\n")


class Zygote:
    """One forking interpreter, for calls whose start-up environment is `startup`."""

    def __init__(self, startup: dict[str, str]) -> None:
        self.folder = tempfile.mkdtemp(prefix="pressroom-zygote-")
        self.path = os.path.join(self.folder, "socket")
        self.log = os.path.join(self.folder, "zygote.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, self.path],
                env={"PATH": "/usr/bin:/bin", **startup},
                cwd=REPO,
                stdin=subprocess.PIPE,  # its lifeline: it exits when this process closes it
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # a Ctrl-C meant for pytest is not for it
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if line != "ready":
            with open(self.log) as log_:
                why = line or log_.read().strip() or f"exit code {self.proc.wait()}"
            self.stop()
            raise RuntimeError(f"the tests' command zygote did not start: {why}")

    def launch(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        stdin: int | None,
        stdout: int,
        stderr: int,
    ) -> Forked:
        """Fork `argv`'s command with these streams (stdin None: /dev/null). Its exit code
        comes on the connection, and it is signalled by pidfd (safe from pid reuse: the zygote
        reaps a command as soon as it ends)."""
        null = os.open(os.devnull, os.O_RDONLY) if stdin is None else None
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(self.path)
            words = argv[3:]  # after `python -m services.console.cli`
            request = json.dumps({"argv": words, "env": env, "cwd": cwd}).encode()
            socket.send_fds(conn, [request], [stdin if null is None else null, stdout, stderr])
            message, pidfds, _, _ = socket.recv_fds(conn, 64, 1)
            if not message or not pidfds:
                raise RuntimeError("the tests' command zygote did not start the command")
        except BaseException:
            conn.close()
            raise
        finally:
            if null is not None:
                os.close(null)
        return Forked(argv, conn, int(message), pidfds[0])

    def stop(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


_zygotes: dict[tuple[tuple[str, str], ...], Zygote] = {}
_failed: dict[tuple[tuple[str, str], ...], RuntimeError] = {}
_lock = threading.Lock()


def _zygote(startup: dict[str, str]) -> Zygote:
    key = tuple(sorted(startup.items()))
    with _lock:
        if key in _failed:  # once is enough: each try imports for seconds
            raise _failed[key]
        zygote = _zygotes.get(key)
        if zygote is None or zygote.proc.poll() is not None:
            try:
                zygote = _zygotes[key] = Zygote(startup)
            except RuntimeError as error:
                _failed[key] = error
                raise
        return zygote


@atexit.register
def _stop_all() -> None:
    for zygote in _zygotes.values():
        zygote.stop()


def _exit_code(message: bytes) -> int:
    if not message:
        raise RuntimeError("the tests' command zygote ended before the command did")
    return int(message)


class Process(Protocol):
    """What the tests use of a long-running command: a `subprocess.Popen`, or a `Forked`."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | Any: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Forked:
    """A long-running command forked by a zygote, used as a `subprocess.Popen` is: its exit
    code comes from the zygote, signals go through a pidfd (never to a reused pid)."""

    def __init__(self, args: list[str], conn: socket.socket, pid: int, pidfd: int) -> None:
        self.args, self.pid = args, pid
        self.returncode: int | None = None
        self._conn, self._pidfd = conn, pidfd

    def _ended(self, message: bytes) -> int:
        self._conn.close()
        os.close(self._pidfd)
        self.returncode = _exit_code(message)
        return self.returncode

    def __del__(self) -> None:  # dropped without a wait: its connection and pidfd go too
        if self.returncode is None:
            with suppress(OSError):
                self._conn.close()
                os.close(self._pidfd)

    def poll(self) -> int | None:
        if self.returncode is None:
            self._conn.settimeout(0)
            try:
                message = self._conn.recv(64)
            except BlockingIOError:
                return None
            self._ended(message)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None and timeout <= 0 and self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                message = self._conn.recv(64)
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            return self._ended(message)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with suppress(ProcessLookupError):  # ended meanwhile; its code is on its way
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    args: list[str] | tuple[str, ...],
    *,
    env: Mapping[str, str],
    cwd: Path | str,
    output: IO[bytes],
    fork: bool = True,
) -> Process:
    """`python -m services.console.cli *args` left running, stdout and stderr to `output`,
    stdin /dev/null (as `subprocess.Popen` with those settings). `fork=False`: exec'd afresh,
    where a test reads what only a fresh process has (its `/proc/<pid>/environ`)."""
    argv = [sys.executable, "-m", MODULE, *args]
    if not (fork and forking()):
        return subprocess.Popen(
            argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    zygote = _zygote(startup_env(env))
    return zygote.launch(argv, dict(env), str(cwd), None, output.fileno(), output.fileno())


# ---- the zygote -------------------------------------------------------------------------------


def _preload() -> None:
    """Import what a command imports, Pressroom's own modules excepted."""
    import shared  # noqa: F401  # its start-up tweaks (shared/startup.py) come first, as in a command

    discovered = subprocess.run(
        [sys.executable, "-c", DISCOVER], capture_output=True, text=True, cwd=REPO, check=True
    )
    import importlib
    import warnings

    # A warning or a line printed while importing would reach a fresh command's stderr, and
    # tests that read a command's stderr must see it: a zygote that would swallow one refuses
    # to start, with what was printed.
    with tempfile.TemporaryFile() as printed:
        saved = os.dup(1), os.dup(2)
        os.dup2(printed.fileno(), 1)
        os.dup2(printed.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught:
                for name in discovered.stdout.split():
                    try:
                        importlib.import_module(name)
                    except Exception:  # a module only its importer can import
                        continue
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for target, fd in enumerate(saved, start=1):
                os.dup2(fd, target)
                os.close(fd)
            printed.seek(0)
            text = printed.read().decode(errors="replace")
            sys.stderr.write(text)  # into the zygote's log, whatever happened
            sys.stderr.flush()
    said = discovered.stderr + text
    said += "".join(
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught
    )
    if said.strip():
        print(f"importing what a command imports printed: {said.strip()!r}", flush=True)
        sys.exit(1)
    for name in [n for n in sys.modules if n.split(".")[0] in OWN]:
        del sys.modules[name]
    import gc

    # Kept out of the collector's reach: a command's collections and its exit would otherwise
    # walk (and so copy, page by page) everything inherited: 0.1-0.2 s of CPU per command.
    gc.collect()
    gc.freeze()
    if threading.active_count() != 1:
        raise RuntimeError("a preloaded module started a thread: this process cannot fork")


def _serve(path: str) -> dict[str, Any]:
    """Fork a command for each request; in the parent, report each one's exit code to its
    caller. Returns only in a forked command, with its request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    waiting: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    selector.register(0, selectors.EVENT_READ, "lifeline")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "lifeline":
                if not os.read(0, 4096):
                    os._exit(0)
            elif key.data == "reap":
                os.read(wake_r, 4096)
                while waiting:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    conn = waiting.pop(pid, None)
                    if conn is not None:
                        with suppress(OSError):
                            conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                        conn.close()
            else:
                conn, _ = listener.accept()
                fds: list[int] = []
                pid = 0
                try:
                    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                    if not message or len(fds) != 3:
                        raise ValueError(f"a request with {len(fds)} streams: not started")
                    pid = os.fork()
                    if pid == 0:
                        try:
                            request = _child(
                                message, fds, conn, listener, selector, waiting, (wake_r, wake_w)
                            )
                        except BaseException:  # not the zygote's handlers: this is the command
                            import traceback

                            traceback.print_exc()
                            os._exit(127)
                        fds = []  # now 0, 1 and 2: not closed below
                        return request
                    waiting[pid] = conn
                    pidfd = os.pidfd_open(pid)  # before this loop can reap it
                    try:
                        socket.send_fds(conn, [str(pid).encode()], [pidfd])
                    finally:
                        os.close(pidfd)
                    pid = 0  # reported: its caller owns it
                except Exception as error:  # that caller's problem, not the next one's
                    print(f"zygote: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                    if pid:  # forked, but nobody knows its pid: not left running
                        with suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    if conn not in waiting.values():
                        conn.close()
                finally:
                    for fd in fds:
                        os.close(fd)


def _child(
    message: bytes,
    fds: list[int],
    conn: socket.socket,
    listener: socket.socket,
    selector: selectors.BaseSelector,
    waiting: dict[int, socket.socket],
    wake: tuple[int, int],
) -> dict[str, Any]:
    """In a forked command: the zygote's sockets and signal handling gone, the caller's
    streams as 0, 1 and 2; its request."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    selector.close()
    for fd in wake:
        os.close(fd)
    listener.close()
    conn.close()
    for other in waiting.values():
        other.close()
    os.setpgid(0, 0)  # a timeout kills the command and what it started
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    request: dict[str, Any] = json.loads(message)
    return request


def _become(request: dict[str, Any]) -> None:
    """This forked process, as `python -m services.console.cli` started in the caller's
    folder with the caller's environment and argv."""
    # What the interpreter added to its own environment when it started: LC_CTYPE=C.UTF-8
    # where the locale was C or POSIX (PEP 538). The start-up key makes that the same here.
    coerced = {k: os.environ[k] for k in ("LC_CTYPE",) if k in os.environ}
    os.environ.clear()
    os.environ.update(request["env"])
    for name, value in coerced.items():
        os.environ.setdefault(name, value)
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # what `-m` puts first (a script's own folder here)
    sys.argv = ["-m", *request["argv"]]


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # the project, not this file's folder
    _preload()
    _become(_serve(sys.argv[1]))
    runpy._run_module_as_main(MODULE, alter_argv=True)  # type: ignore[attr-defined]
