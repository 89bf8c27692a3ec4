"""Start-up time: what every Pressroom process (each service, each `pressroom` command) would
otherwise load without using it. Run once, from the packages' `__init__`, before anything
imports nats."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _OnFirstUse(types.ModuleType):
    """A module that is imported only when one of its names is first used."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


def defer_aiohttp() -> None:
    """nats-py imports aiohttp when it is imported, for its WebSocket transport (`ws://` URLs):
    0.15 s of every process's start-up (0.65 s for a `pressroom` command in all), for a module
    used only with such URLs. Its transport module is imported with aiohttp hidden and then given
    stand-ins that import aiohttp (and multidict, imported beside it) the first time the transport
    uses them, so `ws://` still works.
    Nothing is done when either module is loaded already."""
    if "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails here
    try:
        transport = importlib.import_module("nats.aio.transport")
    except ImportError:  # nats-py is not installed (a tool that needs no bus)
        return
    finally:
        del sys.modules["aiohttp"]
    # The transport imports multidict (its WebSocket headers) in the same `try` as aiohttp.
    for name in ("aiohttp", "multidict"):
        if getattr(transport, name, True) is None:
            setattr(transport, name, _OnFirstUse(name))


def structlog_without_rich() -> None:
    """structlog imports Rich (and through it attrs and Pygments) when it is installed, for
    pretty tracebacks and the locals of exception frames: 0.06–0.14 s of every process's start
    (services, render processes, `pressroom` commands), for features Pressroom does not use (a
    log line never carries a Rich traceback, and exception frames are logged without their
    locals: shared/observe/logging.py). structlog is imported with Rich hidden, so its modules
    fall back to plain formatting; a `pressroom` command that prints with Rich still loads it.
    Nothing is done when either is loaded already."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` fails here
    try:
        importlib.import_module("structlog")
    except ImportError:  # pragma: no cover - structlog is a dependency
        return
    finally:
        del sys.modules["rich"]


def httpx_without_its_cli() -> None:
    """httpx imports its own command line (`httpx._main`) when it is imported, and that loads
    Click, Pygments and Rich if they are installed: about 0.03 s for every process that makes
    an HTTP request (the fetcher's sources, webhooks, the console's checks), for a CLI
    Pressroom never runs. Blocked, httpx falls back to a `main` that says how to install it."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
