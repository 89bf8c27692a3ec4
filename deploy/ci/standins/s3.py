"""Offline stand-in for MinIO: moto's S3 server on :9000 that keeps its data on a volume.

moto holds everything in memory, so the server records every request with moto's own recorder
into /data and replays the writes on start (served only once they are back): `down` then `up`
keeps the buckets and objects, as MinIO's volume does. `--init` does what `minio-init` does
(the buckets, the 30-day expiry of artefacts); `--check` is the healthcheck.
Only for CI without an image registry; with one, compose runs the real MinIO.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from standin import exit_on_sigterm, healthcheck

PORT, INTERNAL_PORT = 9000, 9100
DATA = Path(os.environ.get("S3_STANDIN_DATA", "/data"))
RECORDING = DATA / "moto-recording.jsonl"
BUCKETS = ("pressroom-artefacts", "company-reports")


def compact() -> int:
    """Keep only the writes: reads change nothing, and replaying them would only take time."""
    if not RECORDING.is_file():
        return 0
    kept = []
    for line in RECORDING.read_text().splitlines():
        if line.strip() and json.loads(line).get("method") not in ("GET", "HEAD"):
            kept.append(line)
    RECORDING.write_text("".join(f"{line}\n" for line in kept))
    return len(kept)


def serve() -> None:
    exit_on_sigterm()
    DATA.mkdir(parents=True, exist_ok=True)
    writes = compact()
    os.environ["MOTO_RECORDER_FILEPATH"] = str(RECORDING)
    os.environ["MOTO_ENABLE_RECORDING"] = "true"
    from moto.moto_api import recorder
    from moto.server import ThreadedMotoServer

    if writes:
        # Replayed on a loopback-only port, so nobody sees a half-restored store.
        internal = ThreadedMotoServer(ip_address="127.0.0.1", port=INTERNAL_PORT, verbose=False)
        internal.start()
        recorder.replay_recording(target_host=f"http://127.0.0.1:{INTERNAL_PORT}")
        internal.stop()
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT, verbose=False)
    server.start()
    print(f"S3 stand-in (moto) on :{PORT}; {writes} recorded write(s) replayed", flush=True)
    signal.pause()


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
