"""Offline stand-in for MinIO: moto's S3 server on :9000 that keeps its data on a volume.

moto holds everything in memory, so the server records every request with moto's own recorder
into /data and, on start, makes the recorded writes again through moto's app in-process before it
listens: `down` then `up` keeps the buckets and objects, as MinIO's volume does. A record torn by
a stop mid-write is left out, and said so. `--init` does what `minio-init` does
(the buckets, the 30-day expiry of artefacts); `--check` is the healthcheck.
Only for CI without an image registry; with one, compose runs the real MinIO.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from standin import exit_on_sigterm, healthcheck

PORT = int(os.environ.get("S3_STANDIN_PORT", "9000"))
DATA = Path(os.environ.get("S3_STANDIN_DATA", "/data"))
RECORDING = DATA / "moto-recording.jsonl"
BUCKETS = ("pressroom-artefacts", "company-reports")
# Set by the client from the body replayed, never taken from the record: a recorded length
# that the recorded body does not have would leave the request waiting for bytes for ever.
UNREPLAYED_HEADERS = {"content-length", "transfer-encoding", "expect", "connection"}


def compact() -> list[dict[str, Any]]:
    """The recorded writes, the file rewritten with only them: reads change nothing, and
    replaying them would only take time. A line that is not whole JSON (the process stopped in
    the middle of writing it) is left out, and said so."""
    if not RECORDING.is_file():
        return []
    kept, torn = [], 0
    for line in RECORDING.read_text().splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if entry.get("method") not in ("GET", "HEAD"):
            kept.append(entry)
    if torn:
        print(f"S3 stand-in: {torn} torn record(s) left out", flush=True)
    RECORDING.write_text("".join(f"{json.dumps(entry)}\n" for entry in kept))
    return kept


def replay(app: Any, writes: list[dict[str, Any]]) -> int:
    """The recorded writes, made again through moto's app in this process (no socket, so no
    request can wait on one), before the server listens: nobody sees a half-restored store.
    Returns how many moto refused; each is said."""
    from werkzeug.test import Client

    client, refused = Client(app), 0
    for entry in writes:
        body = entry.get("body") or b""
        if entry.get("body_encoded"):
            body = base64.b64decode(body)
        url = urlsplit(entry["url"])
        headers = {
            k: v for k, v in entry.get("headers", {}).items() if k.lower() not in UNREPLAYED_HEADERS
        }
        answer = client.open(
            url.path or "/",
            base_url=f"http://{headers.get('Host', f'127.0.0.1:{PORT}')}",
            query_string=url.query,
            method=entry["method"],
            headers=headers,
            data=body,
        )
        if answer.status_code >= 300:
            refused += 1
            print(
                f"S3 stand-in: replayed {entry['method']} {url.path}: {answer.status}", flush=True
            )
    return refused


def serve() -> None:
    exit_on_sigterm()
    DATA.mkdir(parents=True, exist_ok=True)
    writes = compact()
    os.environ["MOTO_RECORDER_FILEPATH"] = str(RECORDING)
    os.environ["MOTO_ENABLE_RECORDING"] = "true"
    from moto.moto_api import recorder
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    print(f"S3 stand-in: replaying {len(writes)} recorded write(s)", flush=True)
    recorder.stop_recording()  # the replay is in the file already
    refused = replay(app, writes)
    recorder.start_recording()
    # In this thread, so a port it cannot bind ends the process with the reason.
    server = make_server("0.0.0.0", PORT, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"S3 stand-in (moto) on :{PORT}; {len(writes) - refused} write(s) back", flush=True)
    server.serve_forever()


def check() -> int:
    """The healthcheck: S3 answers a ListBuckets."""
    return healthcheck(f"http://127.0.0.1:{PORT}/")


def init() -> int:
    """What minio-init does with `mc`: the buckets, and artefacts expiring after 30 days."""
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT", "http://minio:9000"),
        aws_access_key_id=os.environ["MINIO_ROOT_USER"],
        aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"],
        region_name="us-east-1",
    )
    deadline = time.monotonic() + float(os.environ.get("S3_INIT_TIMEOUT", "120"))
    while True:  # compose may start this before the server listens (podman-compose does)
        try:
            client.list_buckets()
            break
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                print("minio-init: the S3 server never answered", file=sys.stderr)
                return 1
            time.sleep(0.5)
    for bucket in BUCKETS:
        try:
            client.create_bucket(Bucket=bucket)
            print(f"minio-init: bucket {bucket} created")
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            print(f"minio-init: bucket {bucket} kept")
    client.put_bucket_lifecycle_configuration(
        Bucket="pressroom-artefacts",
        LifecycleConfiguration={
            "Rules": [
                {"ID": "expire-artefacts", "Status": "Enabled", "Filter": {"Prefix": ""},
                 "Expiration": {"Days": 30}}
            ]
        },
    )  # fmt: skip
    print("minio-init: artefacts expire after 30 days")
    return 0


if __name__ == "__main__":
    command = sys.argv[1:]
    if command == ["--check"]:
        sys.exit(check())
    if command == ["--init"]:
        sys.exit(init())
    serve()
