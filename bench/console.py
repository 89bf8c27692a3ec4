"""The console's page times with 100,000 reports in the ledger (issue #31: each page < 200 ms).

Starts a nats-server on loopback, writes BENCH_CONSOLE_ENTRIES ledger entries (default 100,000:
delivered, failed and in flight, ten templates, a fifth from schedules) and 50 dead letters,
starts `pressroom console` as its own process, signs in, and times each page over HTTP.
Writes docs/console/bench.json and prints a table. `python -m bench.console`.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.console.busaccess import open_bus
from services.console.embedded import free_port, start_nats_server
from shared.adapters.ledger import LedgerEntry, StageRecord
from shared.bus.names import DLQ_STREAM, LEDGER_BUCKET
from shared.events import Artefact, ChannelResult, DeadLetter
from shared.settings import Settings
from tests.helpers import REPO

ENTRIES = int(os.environ.get("BENCH_CONSOLE_ENTRIES", "100000"))
ROUNDS = int(os.environ.get("BENCH_CONSOLE_ROUNDS", "15"))
OUT = REPO / "docs" / "console"
TEMPLATES = [f"report-{n}.html" for n in range(10)]
PASSWORD = "bench-password-long-enough"


def entry(n: int, now: datetime) -> LedgerEntry:
    """One ledger entry as the pipeline writes it (stages, artefact, channel)."""
    at = now - timedelta(seconds=(ENTRIES - n) * 20)
    status = "delivered" if n % 20 else ("failed" if n % 40 else "rendered")
    stages = {
        "fetcher": StageRecord(
            state="done", seq=3 * n + 1, started_at=at, finished_at=at, seconds=0.05
        ),
        "renderer": StageRecord(
            state="failed" if status == "failed" else "done",
            seq=3 * n + 2,
            started_at=at,
            finished_at=at + timedelta(seconds=1),
            seconds=1.0,
            error="undefined variable 'x'" if status == "failed" else None,
        ),
    }
    if status == "delivered":
        stages["distributor"] = StageRecord(
            state="done",
            seq=3 * n + 3,
            started_at=at + timedelta(seconds=1),
            finished_at=at + timedelta(seconds=1.2),
            seconds=0.2,
        )
    return LedgerEntry(
        request_id=f"bench-{n:06d}",
        template=TEMPLATES[n % len(TEMPLATES)],
        requested_by="scheduler:weekly" if n % 5 == 0 else "billing-service",
        requested_at=at,
        stages=stages,
        artefacts=[]
        if status == "failed"
        else [
            Artefact(
                format="pdf",
                key=f"reports/bench-{n:06d}.pdf",
                size=48_000,
                sha256="0" * 64,
                content_type="application/pdf",
            )
        ],
        channels=[ChannelResult(channel="file", ok=True, target=f"out/bench-{n:06d}.pdf")]
        if status == "delivered"
        else [],
        render_seconds=1.0,
        fetch_seconds=0.05,
    )


async def fill(settings: Settings) -> float:
    started = time.monotonic()
    now = datetime.now(UTC)
    async with open_bus(settings) as bus:
        kv = await bus.js.key_value(LEDGER_BUCKET)
        for start in range(0, ENTRIES, 1000):
            batch = [entry(n, now) for n in range(start, min(start + 1000, ENTRIES))]
            await asyncio.gather(
                *(kv.put(e.request_id, e.model_dump_json().encode()) for e in batch)
            )
        for n in range(50):
            letter = DeadLetter(
                subject="data.ready",
                payload=json.dumps({"request": {"template": TEMPLATES[n % 10]}}),
                stage="renderer",
                reason="undefined variable 'x'",
                permanent=True,
                attempts=1,
                first_failure=now,
                last_failure=now,
                request_id=f"bench-{n * 40 + 20:06d}",
            )
            await bus.js.publish(f"dlq.{letter.subject}", letter.model_dump_json().encode())
        assert (await bus.js.stream_info(DLQ_STREAM)).state.messages == 50
    return time.monotonic() - started


class Browser:
    """httpx with the session cookie the console sets, kept by hand."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=60)
        self.cookies: dict[str, str] = {}

    def _keep(self, answer: httpx.Response) -> httpx.Response:
        for value in answer.headers.get_list("set-cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";")[0]
        return answer

    def get(self, path: str) -> httpx.Response:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return self._keep(self.client.get(path, headers={"cookie": header}))

    def login(self) -> None:
        form = self.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = self._keep(
            self.client.post(
                "/login",
                data={"username": "bench", "password": PASSWORD, "csrf_token": token[1]},
                headers={"cookie": header},
            )
        )
        assert answer.status_code == 303, answer.text


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        port = free_port()
        nats = start_nats_server(root / "nats", port, monitor_port=free_port())
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PRESSROOM_")},
            "PRESSROOM_NATS_URL": f"nats://127.0.0.1:{port}",
            "PRESSROOM_DATA_DIR": str(root / "state"),
            "PRESSROOM_CONSOLE_SECRET": "bench-secret-" + "y" * 24,
            "PRESSROOM_TEMPLATES_DIR": str(REPO / "templates"),
            "PYTHONPATH": str(REPO),
        }
        console: subprocess.Popen[bytes] | None = None
        try:
            settings = Settings(nats_url=env["PRESSROOM_NATS_URL"], data_dir=root / "state")  # type: ignore[call-arg]
            filled = asyncio.run(fill(settings))
            print(f"wrote {ENTRIES:,} ledger entries and 50 dead letters in {filled:.1f} s")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "services.console.cli",
                    "console",
                    "user",
                    "add",
                    "bench",
                    "--role",
                    "ops",
                ],
                input=PASSWORD.encode(),
                env=env,
                check=True,
                capture_output=True,
            )
            http = free_port()
            started = time.monotonic()
            console = subprocess.Popen(
                [sys.executable, "-m", "services.console.cli", "console", "--port", str(http)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            browser = Browser(f"http://127.0.0.1:{http}")
            while True:
                try:
                    if browser.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            browser.login()
            while browser.get("/api/reports").json()["loading"]:
                time.sleep(0.2)
            indexed = time.monotonic() - started
            rss = _rss_mib(console.pid)
            print(f"console up and {ENTRIES:,} reports indexed in {indexed:.1f} s ({rss} MiB)")
            # The SLO index built from the ledger the first time (the upgrade path): once.
            while not _slo_current(browser.get("/api/slo?window=24h").json()["index"]):
                time.sleep(0.5)
            backfilled = time.monotonic() - started
            print(f"SLO index built from {ENTRIES:,} ledger entries {backfilled:.1f} s after start")
            slo_first: dict[str, float] = {}
            for window in ("24h", "7d", "30d"):  # the first call of each window (no cache)
                began = time.perf_counter()
                assert browser.get(f"/slo?window={window}").status_code == 200
                slo_first[window] = round((time.perf_counter() - began) * 1000, 1)
            began = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "services.console.cli", "slo", "--json"],
                env=env,
                capture_output=True,
                check=False,
            )
            cli_slo = time.perf_counter() - began
            deep = browser.get("/api/reports").json()
            cursor = deep["next_cursor"]
            for _ in range(200):  # 200 pages back: 10,000 reports older than the newest
                older = browser.get(f"/api/reports?cursor={cursor}").json()["next_cursor"]
                if older is None:
                    break
                cursor = older
            pages = {
                "/reports": "/reports",
                "/reports?status=failed": "/reports?status=failed",
                "/reports?template=…&schedule=…": "/reports?template=report-3.html&schedule=weekly",
                "/reports?q=<id> (search)": "/reports?q=bench-000123",
                "/reports 200 pages deep": f"/reports?cursor={cursor}",
                "/reports/{id}": f"/reports/bench-{ENTRIES // 2 + 1:06d}",
                "/dead-letters (50)": "/dead-letters",
                "/schedules": "/schedules",
                "/slo?window=24h": "/slo?window=24h",
                "/slo?window=7d": "/slo?window=7d",
                "/slo?window=30d": "/slo?window=30d",
                "/api/slo?window=30d": "/api/slo?window=30d",
                "/health": "/health",
                "/audit": "/audit",
            }
            results: dict[str, dict[str, float]] = {}
            for label, path in pages.items():
                times = []
                for _ in range(ROUNDS):
                    began = time.perf_counter()
                    answer = browser.get(path)
                    times.append((time.perf_counter() - began) * 1000)
                    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
                times.sort()
                results[label] = {
                    "median_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                    "max_ms": round(times[-1], 1),
                }
        finally:
            if console is not None:
                console.terminate()
                console.wait(timeout=15)
            nats.terminate()
            nats.wait(timeout=10)
    report: dict[str, Any] = {
        "entries": ENTRIES,
        "rounds": ROUNDS,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg()[0],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "index_seconds": round(indexed, 1),
        "console_rss_mib": rss,
        "slo_index_backfill_seconds": round(backfilled, 1),
        "slo_first_call_ms": slo_first,
        "pressroom_slo_cli_seconds": round(cli_slo, 2),
        "pages": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'page':<34} {'median':>8} {'p95':>8} {'max':>8}  (ms, {ROUNDS} rounds)")
    for label, row in results.items():
        print(f"{label:<34} {row['median_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8}")
    print(
        f"/slo first calls (ms): {slo_first}; `pressroom slo --json` (a whole process): "
        f"{cli_slo:.2f} s; the SLO index was built in {backfilled:.1f} s after start (once)"
    )


def _slo_current(index: dict[str, Any]) -> bool:
    return bool(index["current"] and index["seq"] == index["ledger_seq"])


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


if __name__ == "__main__":
    # Workers and commands exec'd as a deployment starts them, not forked from the tests'
    # zygote (tests/cliproc.py): a forked worker's memory would count the zygote's modules.
    os.environ["TESTS_FORK_CLI"] = "0"
    main()
