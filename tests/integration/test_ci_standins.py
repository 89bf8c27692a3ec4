"""The offline CI's S3 stand-in for MinIO (deploy/ci/standins/s3.py): its objects survive a stop
and a start, as MinIO's volume keeps them for `make compose-test`'s down-then-up, even when the
stop tore its last record, or a record's body is shorter than the length it announced (a client
stopped mid-upload). Such a record once left the stand-in waiting for bytes on restart, and
the stack never came up."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from services.console.embedded import free_port
from tests.helpers import REPO

pytestmark = pytest.mark.integration

STANDINS = REPO / "deploy" / "ci" / "standins"
USER, SECRET = "standin-user", "standin-secret-key"
PDF = b"%PDF-1.7 " + bytes(range(256)) * 64


class Standin:
    def __init__(self, data: Path) -> None:
        self.data, self.port = data, free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(STANDINS),
            "S3_STANDIN_DATA": str(data),
            "S3_STANDIN_PORT": str(self.port),
            "MINIO_ROOT_USER": USER,
            "MINIO_ROOT_PASSWORD": SECRET,
            "S3_ENDPOINT": f"http://127.0.0.1:{self.port}",
        }
        self.log = data.parent / f"standin-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def script(self, *args: str) -> list[str]:
        return [sys.executable, str(STANDINS / "s3.py"), *args]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.script(), env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 120  # a bound for a failure only: it answers long before
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the stand-in ended ({self.proc.returncode}):\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the stand-in never answered:\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # what `down` sends
        self.proc.wait(timeout=60)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def client(self) -> Minio:  # Pressroom's own S3 client, as the artefact store uses it
        return Minio(f"127.0.0.1:{self.port}", access_key=USER, secret_key=SECRET, secure=False)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    server = Standin(tmp_path / "data")
    yield server
    if server.proc is not None:
        server.proc.kill()
        server.proc.wait()


def put(client: Minio, key: str, data: bytes) -> None:
    client.put_object(
        "pressroom-artefacts", key, io.BytesIO(data), len(data), content_type="application/pdf"
    )


def test_objects_survive_a_restart_past_a_torn_and_a_short_record(standin: Standin) -> None:
    standin.start()
    init = subprocess.run(
        standin.script("--init"), env=standin.env, capture_output=True, timeout=120
    )
    assert init.returncode == 0, init.stderr.decode()
    client = standin.client()
    for n in range(3):
        put(client, f"reports/{n}/report.pdf", PDF + bytes([n]))
    standin.stop()

    recording = standin.data / "moto-recording.jsonl"
    records = [json.loads(line) for line in recording.read_text().splitlines()]
    [upload] = [r for r in records if r["method"] == "PUT" and r["url"].endswith("/0/report.pdf")]
    short = {**upload, "url": upload["url"].replace("/0/", "/short/"), "body": ""}
    assert int(short["headers"]["Content-Length"]) > 0  # announced, never sent
    with recording.open("a") as file:
        file.write(json.dumps(short) + "\n")
        file.write('{"headers": {"Host": "minio:9000", "Content-Le')  # stopped mid-write

    standin.start()
    client = standin.client()
    keys = {o.object_name for o in client.list_objects("pressroom-artefacts", recursive=True)}
    assert {f"reports/{n}/report.pdf" for n in range(3)} <= keys
    stored = client.get_object("pressroom-artefacts", "reports/2/report.pdf")
    try:
        assert stored.read() == PDF + bytes([2])
    finally:
        stored.close()
        stored.release_conn()
    rules = client.get_bucket_lifecycle("pressroom-artefacts")
    assert rules is not None and [r.rule_id for r in rules.rules] == ["expire-artefacts"]
    assert "1 torn record(s) left out" in standin.output()

    # What it serves after the restart is recorded too: a second restart keeps it.
    put(client, "reports/later/report.pdf", PDF)
    standin.stop()
    standin.start()
    keys = {
        o.object_name for o in standin.client().list_objects("pressroom-artefacts", recursive=True)
    }
    assert "reports/later/report.pdf" in keys and "reports/1/report.pdf" in keys
