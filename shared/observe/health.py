"""Liveness, readiness and metrics over HTTP for every worker: /livez, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["healthy", "degraded", "unhealthy"]
Check = Callable[[], Awaitable["CheckResult"]]
# Renders the metrics for a scrape's Accept header: (body, content type).
Scrape = Callable[[str], Awaitable[tuple[bytes, str]]]
_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass
class CheckResult:
    status: Status
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def worst_of(statuses: Iterable[Status]) -> Status:
    """The worst of `statuses` (none: healthy)."""
    return max(statuses, key=lambda status: _RANK[status], default="healthy")


async def run_checks(checks: dict[str, Check], timeout: float = 3.0) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, check in checks.items():
        try:
            result = await asyncio.wait_for(check(), timeout)
        except Exception as error:  # a check that hangs or raises is itself the finding
            result = CheckResult("unhealthy", f"{type(error).__name__}: {error}")
        results[name] = {"status": result.status, "detail": result.detail, **result.data}
    return {"status": worst_of(r["status"] for r in results.values()), "checks": results}


class HealthServer:
    """A tiny HTTP server on the worker's event loop (if the loop is stuck, /livez times out)."""

    def __init__(
        self,
        service: str,
        checks: dict[str, Check],
        host: str,
        port: int,
        metrics: Scrape | None = None,
    ) -> None:
        self.service, self.checks, self.host, self.port = service, checks, host, port
        self.metrics = metrics
        self.started = time.time()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode(errors="replace").split()
            path = parts[1] if len(parts) > 1 else "/"
            accept = ""
            while (header := await asyncio.wait_for(reader.readline(), 5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                name, _, value = header.decode(errors="replace").partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            if path.startswith("/metrics") and self.metrics is not None:
                text, content_type = await self.metrics(accept)
                self._answer(writer, 200, text, content_type)
                await writer.drain()
                return
            if path.startswith("/livez"):
                code, body = (
                    200,
                    {
                        "status": "healthy",
                        "service": self.service,
                        "uptime_seconds": round(time.time() - self.started, 1),
                    },
                )
            elif path.startswith("/readyz") or path.startswith("/health"):
                body = {"service": self.service, **await run_checks(self.checks)}
                code = 503 if body["status"] == "unhealthy" else 200
            else:
                code, body = 404, {"error": "try /livez, /readyz or /metrics"}
            self._answer(writer, code, json.dumps(body).encode(), "application/json")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, code: int, payload: bytes, content_type: str) -> None:
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
