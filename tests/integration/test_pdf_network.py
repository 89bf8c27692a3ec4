"""The renderer's URL fetcher against a real HTTP server: no network fetch unless allow-listed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.renderer.job import RenderJob
from services.renderer.pdf import render_job
from shared.errors import ResourceBlocked

pytestmark = pytest.mark.integration


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    return folder


def render(folder: Path, body: str, **kwargs: object) -> bytes:
    (folder / "t.html").write_text(f"<html><body>{body}</body></html>")
    out = render_job(RenderJob(str(folder), "t.html", {}, ("pdf",), **kwargs))  # type: ignore[arg-type]
    assert out.pdf is not None
    return out.pdf


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"body { color: blue }")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()


def test_network_fetches_are_blocked_unless_allow_listed(
    folder: Path, http_server: tuple[str, list[str]]
) -> None:
    base, hits = http_server
    with pytest.raises(ResourceBlocked, match="not allow-listed"):
        render(folder, f'<link rel="stylesheet" href="{base}/x.css"><p>hi</p>')
    assert hits == []
    render(
        folder, f'<link rel="stylesheet" href="{base}/ok.css"><p>hi</p>', asset_allow=("127.0.0.1",)
    )
    assert hits == ["/ok.css"]
