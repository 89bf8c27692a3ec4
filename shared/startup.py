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
