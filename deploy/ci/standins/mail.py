"""Offline stand-in for Mailpit: an SMTP catcher (aiosmtpd) and a read API in Mailpit's shape.

SMTP on :1025 keeps every message it accepts in memory; HTTP on :8025 answers
`GET /api/v1/messages` (ID, From, To, Subject, Attachments, Size per message, newest first as
Mailpit does), `GET /api/v1/message/<ID>/raw` (the message as received) and `GET /livez`.
Only for CI without an image registry; with one, compose runs the real Mailpit.
"""

from __future__ import annotations

import email
import email.policy
import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from standin import QuietHandler, exit_on_sigterm, healthcheck

SMTP_PORT, HTTP_PORT = 1025, 8025
LOCK = threading.Lock()
MESSAGES: list[dict[str, Any]] = []


class Catcher:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        attachments = sum(1 for _ in parsed.iter_attachments()) if parsed.is_multipart() else 0
        with LOCK:
            MESSAGES.append(
                {
                    "ID": f"{len(MESSAGES) + 1:08d}",
                    "From": {"Name": "", "Address": envelope.mail_from},
                    "To": [{"Name": "", "Address": rcpt} for rcpt in envelope.rcpt_tos],
                    "Subject": str(parsed.get("Subject", "")),
                    "Attachments": attachments,
                    "Size": len(raw),
                    "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "_raw": raw,
                }
            )
        return "250 Message accepted for delivery"


class Api(QuietHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/livez", "/readyz"):
            self._send(200, b"ok", "text/plain")
            return
        with LOCK:
            listed = [{k: v for k, v in m.items() if k != "_raw"} for m in reversed(MESSAGES)]
            by_id = {m["ID"]: m["_raw"] for m in MESSAGES}
        if path == "/api/v1/messages":
            body = {"total": len(listed), "count": len(listed), "messages": listed}
            self._send(200, json.dumps(body).encode(), "application/json")
        elif path.startswith("/api/v1/message/") and path.endswith("/raw"):
            raw = by_id.get(path.split("/")[4])
            if raw is None:
                self._send(404, b"message not found", "text/plain")
            else:
                self._send(200, raw, "message/rfc822")
        else:
            self._send(404, b"not found", "text/plain")


def check() -> int:
    """The healthcheck: the read API answers."""
    return healthcheck(f"http://127.0.0.1:{HTTP_PORT}/livez")


def main() -> None:
    exit_on_sigterm()
    controller = Controller(Catcher(), hostname="0.0.0.0", port=SMTP_PORT)
    controller.start()
    print(f"mail catcher: SMTP on :{SMTP_PORT}, API on :{HTTP_PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), Api).serve_forever()


if __name__ == "__main__":
    sys.exit(check()) if sys.argv[1:] == ["--check"] else main()
