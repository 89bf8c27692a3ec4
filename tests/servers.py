"""Real loopback servers for the tests: S3 (moto server mode), SMTP (aiosmtpd), HTTP."""

from __future__ import annotations

import email
import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from services.console.embedded import free_port


class S3Server:
    """moto's S3 in server mode: a real HTTP S3 API the minio client talks to."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def restart(self) -> None:
        """A new, empty server on the same port (moto keeps its state in memory)."""
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "PRESSROOM_S3_ENDPOINT": self.endpoint,
            "PRESSROOM_S3_ACCESS_KEY": "testing",
            "PRESSROOM_S3_SECRET_KEY": "testing",
            "PRESSROOM_S3_SECURE": "false",
            "PRESSROOM_S3_REGION": "us-east-1",
        }

    def client(self) -> Any:
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key="testing",
            secret_key="testing",
            secure=False,
            region="us-east-1",
        )


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message


class SmtpServer:
    """aiosmtpd on loopback, keeping every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Received] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append(
                    Received(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        email.message_from_bytes(envelope.content),
                    )
                )
                return "250 Message accepted"

        self.port = free_port()
        self._handler = Handler()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def restart(self) -> None:
        """A fresh server on the same port (a stopped controller cannot start again)."""
        from aiosmtpd.controller import Controller

        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def env(self) -> dict[str, str]:
        return {
            "PRESSROOM_SMTP_HOST": "127.0.0.1",
            "PRESSROOM_SMTP_PORT": str(self.port),
            "PRESSROOM_SMTP_FROM": "reports@example.com",
        }

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """A real HTTP server; `responder(path, hit_count)` decides each (status, body, headers)."""

    responder: Callable[[str, int], tuple[int, bytes, dict[str, str]]] = field(
        default=lambda path, n: (200, b'{"ok": true}', {"Content-Type": "application/json"})
    )
    hits: list[Hit] = field(default_factory=list)

    def start(self) -> HttpReceiver:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bytes) -> None:
                outer.hits.append(
                    Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                count = sum(1 for h in outer.hits if h.path == self.path)
                status, payload, headers = outer.responder(self.path, count)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client hung up (a size cap, a deadline): often the point

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self._answer(self.rfile.read(length))

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


class PrometheusServer:
    """Debian's prometheus on a loopback port: scraping itself every second, or `config`."""

    def __init__(self, root: Any, config: Any = None) -> None:
        self.root = root
        self.config = config
        self.port = free_port()
        self.process: Any = None

    def start(self) -> PrometheusServer:
        import shutil
        import subprocess
        import time
        import urllib.request

        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: `make test-deps` installs it")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.config
        if config is None:
            config = self.root / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: prometheus\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{self.port}']\n"
            )
        log = (self.root / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                query = f"{self.url}/api/v1/query?query=up"
                with urllib.request.urlopen(query, timeout=1) as response:
                    if json.loads(response.read())["data"]["result"]:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prometheus did not become ready; see {self.root / 'prometheus.log'}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; a query Prometheus rejects raises."""
        import urllib.parse
        import urllib.request

        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
