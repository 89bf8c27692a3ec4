"""What the offline CI stand-ins share: a quiet HTTP handler, the healthcheck, and PID 1's
SIGTERM. Copied beside them into the tools image (deploy/ci/standins/tools.Containerfile)."""

from __future__ import annotations

import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """An HTTP API that answers with `_send` and keeps no access log."""

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the API, not this log."""


def healthcheck(url: str) -> int:
    """The container's healthcheck: 0 when `url` answers 200."""
    with urllib.request.urlopen(url, timeout=3) as answer:
        return 0 if answer.status == 200 else 1


def exit_on_sigterm() -> None:
    # PID 1 in a container: without a handler SIGTERM is ignored and `down` waits for SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
