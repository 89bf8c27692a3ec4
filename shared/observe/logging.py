"""structlog configured once per process: JSON lines carrying request_id and trace ids."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_process: dict[str, str] = {}


def _add_service(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Process-wide, not a context variable: tasks started before configuration (shutdown
    # hooks, the health server) must say which service they belong to too.
    if "service" in _process:
        event.setdefault("service", _process["service"])
    return event


def _add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    try:
        # Imported here: the SDK and exporters load only when OTEL_* asks for them (start-up time).
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - otel is a dependency
        return event
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def configure_logging(service: str, *, json: bool | None = None, level: str | None = None) -> None:
    """Call once at process start; every later log line carries `service`."""
    level_name = (level or os.environ.get("PRESSROOM_LOG_LEVEL", "INFO")).upper()
    as_json = json if json is not None else os.environ.get("PRESSROOM_LOG_FORMAT", "json") == "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_service,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_ids,
            # An exception's frames without their locals: a local may hold a password, a
            # signing secret or a tenant's data, and a log line is read by more people.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, 20)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Not cached: a process may configure again (the CLI, then the worker it becomes).
        cache_logger_on_first_use=False,
    )
    _process["service"] = service
    # FastStream and nats-py log through stdlib logging: keep them quiet and on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    # asyncio notes TLS connections the server closes ("returning true from eof_received() has
    # no effect when using ssl"): noise, not a problem worth a line.
    logging.getLogger("asyncio").setLevel(logging.ERROR)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
