"""compose.yaml run under podman with the offline override, checked from outside the containers.

The stack is `compose.yaml` + `deploy/ci/compose.offline.yaml` (stand-ins for the images no
registry serves here), brought up with podman-compose as project `pressroom-ci`. The tests talk
to it the way a user on the host does: the bus through its published TLS port with the ops
identity from the `bus-auth` volume, S3 on :9000, the mail catcher's API on :8025, the OTLP
receiver's span list on :4318, the report volume's folder. They run in file order on one stack;
each waits for an observable state with a deadline, never a fixed sleep.

Only `make compose-test` runs this module (tests/compose/conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import yaml

from services.console.busaccess import open_bus
from services.console.requests import publish_request
from shared.adapters.ledger import LedgerEntry
from shared.events import ReportRequested
from shared.filenames import request_tag
from shared.settings import Settings
from tests.helpers import REPO, delivered_file, eventually

T = TypeVar("T")

PROJECT = "pressroom-ci"
COMPOSE = REPO / "compose.yaml"
OFFLINE = REPO / "deploy/ci/compose.offline.yaml"
CI_ENV = REPO / "deploy/ci/ci.env"
# The config the workers mount (compose.yaml: STACK_CONFIG), a copy the tests may edit.
CI_CONFIG = REPO / "deploy/ci/ci-pressroom.yaml"
PODMAN_COMPOSE = Path(os.environ.get("PODMAN_COMPOSE", REPO / ".venv/bin/podman-compose"))
# Started first and waited for: podman 4.3 cannot wait for `service_healthy` (podman-compose
# warns and starts dependants at once), so the test does the waiting compose would do.
INFRA = ("nats", "minio", "mailpit", "otel-collector", "prometheus", "alertmanager")
WORKERS = ("scheduler", "fetcher", "renderer", "distributor")
ONE_SHOTS = ("bus-auth", "bus-setup", "minio-init")
PORTS = (4222, 8222, 9000, 9001, 8025, 4318, 9090, 9093)
# Sized for a busy shared 2-core machine, not an idle one: seven worker containers import
# WeasyPrint at once, and podman runs every healthcheck as a fresh process.
UP_TIMEOUT = 900.0
REPORT_TIMEOUT = 360.0
TAG = uuid.uuid4().hex[:8]  # request ids and recipients of this run
S3_BUCKET, S3_PREFIX = "company-reports", f"portfolio/ci-{TAG}/"


# ---- the stack ---------------------------------------------------------------------------
def run(*argv: str | Path, timeout: float = 600, check: bool = True) -> str:
    shown = " ".join(str(a) for a in argv)
    try:
        result = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{shown} did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise AssertionError(f"{shown} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def compose(*args: str, timeout: float = 600) -> str:
    files = ("-f", str(COMPOSE), "-f", str(OFFLINE), "--env-file", str(CI_ENV))
    return run(PODMAN_COMPOSE, "-p", PROJECT, *files, *args, timeout=timeout)


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    return run("podman", *args, check=check, timeout=timeout)


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = UP_TIMEOUT, *, about: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`,
    with the last error the probe raised and what the containers (`about`: one service's, or
    every one of the project) looked like then: their states, and the logs of those that are
    not running or not healthy."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
        except Exception as error:  # a podman call that failed or hung: keep trying
            value, last_error = None, f"{type(error).__name__}: {str(error)[-500:]}"
        if value:
            return value
        if time.monotonic() > deadline:
            found = f"\nlast error: {last_error}" if last_error else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s{found}\n{diagnosis(about)}")
        time.sleep(0.5)


def diagnosis(service: str = "") -> str:
    """States of the project's containers (or one service's), and the tail of the logs of
    each one that is not running, or whose healthcheck fails."""
    lines = []
    try:
        names = containers(service or None, running=False)
        for name in names:
            status, code = state(name)
            checked = status == "running" and has_healthcheck(name)
            ok = healthy(name) if checked else status == "running"
            lines.append(f"  {name}: {status} (exit {code}){'' if ok else ' <- here'}")
            if not ok and not (status == "exited" and code == "0"):
                logs = container_logs(name)
                lines += [f"    | {line}" for line in logs.splitlines()[-25:]]
    except AssertionError as error:  # podman itself does not answer: say that
        lines.append(f"  (podman did not answer: {str(error)[:300]})")
    return "containers:\n" + ("\n".join(lines) if lines else "  none")


def container_logs(name: str, lines: int = 25) -> str:
    """The last lines a container wrote, on stdout and stderr both (`podman logs` passes the
    container's stderr to its own: a traceback would be missed reading only stdout)."""
    check = ["podman", "logs", "--tail", str(lines), name]
    try:
        return subprocess.run(
            check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120
        ).stdout
    except subprocess.TimeoutExpired:
        return "(podman logs did not answer)"


def containers(service: str | None = None, *, running: bool = True) -> list[str]:
    filters = ["--filter", f"label=io.podman.compose.project={PROJECT}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    listing = podman("ps", *([] if running else ["-a"]), *filters, "--format", "{{.Names}}")
    return sorted(listing.split())


def service_of(container: str) -> str:
    return podman(
        "inspect", "--format", '{{index .Config.Labels "com.docker.compose.service"}}', container
    ).strip()


def healthy(container: str) -> bool:
    """The container's own healthcheck command, run now (podman 4.3 runs them only via systemd
    timers, which this kind of machine lacks)."""
    check = ["podman", "healthcheck", "run", container]
    try:  # under load a healthcheck can take long: a slow one is a failed one, tried again
        return subprocess.run(check, capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def has_healthcheck(container: str) -> bool:
    test = podman("inspect", "--format", "{{json .Config.Healthcheck}}", container).strip()
    return test not in ("", "null", "{}")


def volume(name: str) -> Path:
    return Path(
        podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{PROJECT}_{name}").strip()
    )


def bring_up() -> None:
    """What `up -d` does, in the steps podman 4.3 needs: it cannot wait for `service_healthy`,
    and it cannot start a container that `--requires` a finished one-shot (bus-setup) whose own
    dependency is running ("not found in input list"). So: the infrastructure, each healthy;
    the one-shots, each finished with exit 0; then the workers (`--no-deps`: their dependencies
    are the ones just checked), each healthy."""
    # bus-auth first, waited for: NATS includes the auth.conf it writes (podman 4.3 would start
    # NATS at once, and NATS fails until the file is there).
    compose("up", "-d", "--no-deps", "bus-auth")
    finished("bus-auth")
    compose("up", "-d", "--no-deps", *INFRA)
    for service in INFRA:
        [name] = wait_for(lambda s=service: containers(s), f"{service} running", about=service)
        if has_healthcheck(name):  # alertmanager has none
            wait_for(lambda n=name: healthy(n), f"{service}'s healthcheck passing", about=service)
    compose("up", "-d", "--no-deps", "bus-setup", "minio-init")
    for service in ("bus-setup", "minio-init"):
        finished(service)
    compose("up", "-d", "--no-deps", *WORKERS)
    wait_workers_healthy()


def finished(service: str) -> None:
    """A one-shot service ran to its end, with exit code 0."""
    [name] = wait_for(lambda: containers(service, running=False), f"{service} created")
    wait_for(lambda: state(name)[0] == "exited", f"{service} finished", about=service)
    assert state(name) == ("exited", "0"), f"{service} failed:\n{container_logs(name, 100)[-2000:]}"


def wait_workers_healthy() -> None:
    for service in WORKERS:
        for name in wait_for(lambda s=service: containers(s), f"{service} running", about=service):
            wait_for(lambda n=name: healthy(n), f"{name}'s healthcheck passing", about=service)


def state(container: str) -> tuple[str, str]:
    status, code = podman(
        "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container
    ).split()
    return status, code


def write_ci_env() -> None:
    """The keys of .env.example, with a usable webhook secret (the example's is a placeholder)."""
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.startswith("PRESSROOM_WEBHOOK_SECRET="):
            line = "PRESSROOM_WEBHOOK_SECRET=whsec_" + base64.b64encode(os.urandom(32)).decode()
        if line.startswith("PRESSROOM_CONSOLE_SECRET="):
            line = "PRESSROOM_CONSOLE_SECRET=" + base64.urlsafe_b64encode(os.urandom(32)).decode()
        lines.append(line)
    CI_CONFIG.write_text((REPO / "deploy/pressroom.yaml").read_text())
    lines.append(f"STACK_CONFIG={CI_CONFIG}")  # compose.yaml mounts it into every worker
    CI_ENV.write_text("\n".join(lines) + "\n")


def ports_in_use() -> list[int]:
    import socket

    busy = []
    for port in PORTS:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def ports_free() -> bool:
    return not ports_in_use()


@dataclass
class Stack:
    auth: Path  # the bus-auth volume: identities and the CA, as the host sees them

    def settings(self) -> Settings:
        return Settings(
            nats_url="nats://127.0.0.1:4222",
            nats_credentials_dir=self.auth,
            nats_tls_ca=self.auth / "ca.pem",
        )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    for image in ("localhost/pressroom:latest", "localhost/pressroom-offline/tools:latest"):
        if subprocess.run(["podman", "image", "exists", image]).returncode != 0:
            pytest.fail(f"image {image} is missing: run `make compose-images` first")
    write_ci_env()
    compose("down", "-v", timeout=300)  # anything an interrupted run left behind
    # A stack just taken down may hold its ports for a moment; something else holds them longer.
    try:
        wait_for(ports_free, "127.0.0.1 ports free", timeout=120)
    except AssertionError:
        busy = ports_in_use()
        raise AssertionError(f"127.0.0.1 ports {busy} are taken: stop what listens there") from None
    started = time.monotonic()
    try:
        bring_up()
        print(f"\ncompose stack up in {time.monotonic() - started:.0f} s")
        yield Stack(auth=volume("bus-auth"))
    finally:
        if os.environ.get("PRESSROOM_COMPOSE_KEEP") != "1":
            compose("down", "-v", timeout=300)


# ---- what the host sees --------------------------------------------------------------------
def report(request_id: str, deliver: list[dict[str, Any]]) -> ReportRequested:
    return ReportRequested(
        request_id=request_id,
        template="daily.html",
        sources=[{"name": "inventory", "kind": "file", "path": "portfolio.json", "merge": True}],
        deliver=deliver,
        requested_by="compose-test",
    )


async def publish(stack: Stack, *requests: ReportRequested) -> None:
    async with open_bus(stack.settings(), setup=False) as bus:
        for request in requests:
            await publish_request(bus, request)


async def entries(stack: Stack, request_ids: list[str]) -> dict[str, LedgerEntry]:
    async with open_bus(stack.settings(), setup=False) as bus:
        ledger = await bus.ledger()
        found = {rid: await ledger.get(rid) for rid in request_ids}
    return {rid: entry for rid, entry in found.items() if entry is not None}


async def all_delivered(stack: Stack, request_ids: list[str]) -> dict[str, LedgerEntry]:
    async def probe() -> dict[str, LedgerEntry] | None:
        found = await entries(stack, request_ids)
        failed = {rid: e.error for rid, e in found.items() if e.status == "failed"}
        assert not failed, f"reports failed: {failed}"
        done = len(found) == len(request_ids) and all(
            e.status == "delivered" for e in found.values()
        )
        return found if done else None

    return await eventually(probe, timeout=REPORT_TIMEOUT, every=0.5)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def mails_to(address: str) -> list[dict[str, Any]]:
    listed = get_json("http://127.0.0.1:8025/api/v1/messages")["messages"]
    return [m for m in listed if any(to["Address"] == address for to in m["To"])]


def s3() -> Any:
    return boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id="pressroom",
        aws_secret_access_key="not-checked-by-the-stand-in",
        region_name="us-east-1",
    )


def s3_keys(bucket: str, prefix: str) -> list[str]:
    listed = s3().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def tags(names: list[str]) -> list[str]:
    """The request tags of delivered files (`<title>-<date>-<tag>.pdf`), sorted."""
    return sorted(name.removesuffix(".pdf").rsplit("-", 1)[-1] for name in names)


def delivered_files(stack: Stack, folder: str) -> list[str]:
    where = volume("reports") / folder
    return sorted(p.name for p in where.iterdir()) if where.is_dir() else []


FIRST = f"ci-{TAG}-all-channels"


# ---- the checks, in order ------------------------------------------------------------------
def test_every_service_passes_its_healthcheck_and_the_one_shots_succeeded(stack: Stack) -> None:
    running = containers()
    services = {service_of(name) for name in running}
    assert set(INFRA) | set(WORKERS) <= services
    assert {"jaeger", "grafana"}.isdisjoint(services)  # no offline stand-in: not started
    checked = [name for name in running if has_healthcheck(name)]
    assert {service_of(n) for n in checked} == services - {"alertmanager"}
    for name in checked:
        assert healthy(name), f"{name}: healthcheck fails"
    assert len(containers("renderer")) == 2  # deploy.replicas honoured
    for service in ONE_SHOTS:
        for name in containers(service, running=False):
            assert state(name) == ("exited", "0"), name


def test_pressroom_containers_run_as_the_non_root_user(stack: Stack) -> None:
    for service in WORKERS:
        for name in containers(service):
            assert podman("exec", name, "id", "-u").strip() == "10001", name
            # every process in it, not only what `exec` starts
            users = podman("top", name, "user").split()[1:]
            assert users and set(users) == {"pressroom"}, (name, users)


async def test_the_bus_is_locked_with_tls_and_refuses_an_anonymous_client(stack: Stack) -> None:
    import socket

    import nats
    import nkeys

    # What the server announces to anyone who connects: TLS and authentication required.
    with socket.create_connection(("127.0.0.1", 4222), timeout=10) as raw:
        info = json.loads(raw.makefile("rb").readline().decode().removeprefix("INFO "))
    assert info["tls_required"] is True and info["auth_required"] is True
    # A client that trusts the bus's CA but has no identity is refused.
    ca = ssl.create_default_context(cafile=str(stack.auth / "ca.pem"))
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(
            "nats://127.0.0.1:4222", tls=ca, allow_reconnect=False, connect_timeout=5,
            max_reconnect_attempts=1,
        )  # fmt: skip
    # Every worker replica is connected over TLS as its own role's nkey, none as another's.
    connz = get_json("http://127.0.0.1:8222/connz?auth=true")["connections"]
    for role in WORKERS:
        public = nkeys.from_seed(
            (stack.auth / f"{role}.nk").read_bytes().strip()
        ).public_key.decode()
        mine = [c for c in connz if c.get("name") == f"pressroom-{role}"]
        assert len(mine) == len(containers(role)), (role, mine)
        for connection in mine:
            assert connection["authorized_user"] == public, (role, connection)
            assert connection.get("tls_version"), (role, connection)
    async with open_bus(stack.settings(), setup=False) as bus:  # the ops identity is let in
        assert bus.nc.is_connected


async def test_email_s3_and_file_deliveries_each_arrive_exactly_once(stack: Stack) -> None:
    address = f"ci-{TAG}@company.com"
    request = report(
        FIRST,
        [
            {"channel": "email", "to": [address], "subject": f"compose test {TAG}"},
            {"channel": "s3", "bucket": S3_BUCKET, "key": S3_PREFIX},
            {"channel": "file", "path": f"ci-{TAG}"},
        ],
    )
    await publish(stack, request)
    entry = (await all_delivered(stack, [FIRST]))[FIRST]
    assert sorted(c.channel for c in entry.channels if c.ok) == ["email", "file", "s3"]
    assert len(mails_to(address)) == 1
    assert s3_keys(S3_BUCKET, S3_PREFIX) == [f"{S3_PREFIX}{FIRST}.pdf"]
    assert tags(delivered_files(stack, f"ci-{TAG}")) == [request_tag(FIRST)]
    pdf = delivered_file(volume("reports") / f"ci-{TAG}", FIRST).read_bytes()
    assert pdf.startswith(b"%PDF")
    # The artefact itself is in the artefact bucket, as the ledger records it.
    [artefact] = entry.artefacts
    stored = s3().get_object(Bucket="pressroom-artefacts", Key=artefact.key)["Body"].read()
    assert len(stored) == artefact.size and stored == pdf
    # Published again (a retrying publisher): nothing is delivered twice — checked again, after
    # everything else this stack did, before `down` (test_down_then_up_…).
    await publish(stack, request)


async def test_the_spans_of_a_report_reach_the_otlp_receiver_as_one_trace(stack: Stack) -> None:
    def spans_of_first() -> list[dict[str, Any]] | None:
        spans = get_json("http://127.0.0.1:4318/api/spans")
        ours = [s for s in spans if FIRST in s["attributes"].values()]
        traces = {s["trace_id"] for s in ours}
        if not traces:
            return None
        trace = [s for s in spans if s["trace_id"] in traces]
        services = {s["service"] for s in trace}
        return trace if len(traces) == 1 and len(services) >= 3 else None

    async def probe() -> list[dict[str, Any]] | None:
        return spans_of_first()

    trace = await eventually(probe, timeout=120, every=1.0)
    services = {s["service"] for s in trace}
    assert any("fetcher" in s for s in services), services
    assert any("renderer" in s for s in services), services
    assert any("distributor" in s for s in services), services
    assert len({s["trace_id"] for s in trace}) == 1


async def test_two_renderer_replicas_share_the_work(stack: Stack) -> None:
    rids = [f"ci-{TAG}-share-{i}" for i in range(6)]
    await publish(
        stack, *(report(r, [{"channel": "file", "path": f"ci-{TAG}-share"}]) for r in rids)
    )
    done = await all_delivered(stack, rids)
    hosts = {e.stages["renderer"].worker.split(":")[0] for e in done.values()}  # type: ignore[union-attr]
    renderers = {hostname(n) for n in containers("renderer")}
    assert hosts == renderers, (hosts, renderers)


def hostname(container: str) -> str:
    return podman("inspect", "--format", "{{.Config.Hostname}}", container).strip()


def long_report(request_id: str, folder: str) -> ReportRequested:
    """A report that takes seconds to render (25-odd pages, its own rows: no cache hit)."""
    rows = [
        {"name": f"{request_id}-{i}", "status": "active", "health": "green"} for i in range(500)
    ]
    return ReportRequested(
        request_id=request_id,
        template="custom-report.html",
        params={"report_title": request_id, "project_count": 500, "deployment_count": 1,
                "projects": rows},
        deliver=[{"channel": "file", "path": folder}],
        split="off",
        requested_by="compose-test",
    )  # fmt: skip


async def test_a_renderer_container_killed_mid_render_loses_no_report(stack: Stack) -> None:
    rids = [f"ci-{TAG}-kill-{i}" for i in range(4)]
    folder = f"ci-{TAG}-kill"
    victim = containers("renderer")[0]
    victim_host = hostname(victim)
    await publish(stack, *(long_report(r, folder) for r in rids))

    async def rendering_on_victim() -> str | None:
        for rid, entry in (await entries(stack, rids)).items():
            stage = entry.stages.get("renderer")
            if stage and stage.state == "running" and (stage.worker or "").startswith(victim_host):
                return rid
        return None

    caught = await eventually(rendering_on_victim, timeout=REPORT_TIMEOUT, every=0.2)
    podman("kill", victim)
    done = await all_delivered(stack, rids)
    # The report it was rendering was taken again (by the other replica, or by the victim
    # after its restart) and finished; every report is in the folder once.
    again = done[caught].stages["renderer"]
    assert again.attempts >= 2, again
    assert tags(delivered_files(stack, folder)) == sorted(request_tag(r) for r in rids)
    # The killed container comes back (restart: unless-stopped) or is started again.
    if victim not in containers("renderer"):
        podman("start", victim)
    wait_for(lambda: healthy(victim), f"{victim} healthy again")


def readyz(container: str) -> dict[str, Any]:
    """The worker's /readyz, asked inside its container (worker ports are not published)."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try: body = urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=10).read()\n"
        "except urllib.error.HTTPError as error: body = error.read()\n"
        "sys.stdout.write(body.decode())"
    )
    answer: dict[str, Any] = json.loads(podman("exec", container, "python", "-c", script))
    return answer


SCHEDULED = f"ci-{TAG}-scheduled"


async def test_a_schedule_edited_in_the_mounted_config_takes_effect_after_a_restart(
    stack: Stack,
) -> None:
    workers = [name for service in WORKERS for name in containers(service)]
    before = {readyz(name)["checks"]["config"]["fingerprint"] for name in workers}
    assert len(before) == 1, before  # one config, shared by every worker
    config = yaml.safe_load(CI_CONFIG.read_text())
    config["schedules"].append(
        {
            "name": SCHEDULED,
            "cron": "* * * * *",
            "timezone": "UTC",
            "request": {
                "template": "daily.html",
                "sources": [{"name": "inventory", "kind": "file", "path": "portfolio.json",
                             "merge": True}],
                "deliver": [{"channel": "file", "path": SCHEDULED}],
            },
        }
    )  # fmt: skip
    CI_CONFIG.write_text(yaml.safe_dump(config, sort_keys=False))  # in place: the mount sees it
    # Not restarted yet: every worker says it runs the old config, and keeps working.
    for name in workers:
        check = wait_for(
            lambda n=name: (c := readyz(n)["checks"]["config"])["status"] == "degraded" and c,
            f"{name} noticing the edited config",
            timeout=120,
        )
        assert "changed since this worker started" in check["detail"], (name, check)
    assert delivered_files(stack, SCHEDULED) == []
    # Restarted as docs/operations.md says (the scheduler last: a fetcher still on the old
    # config would refuse the new schedule's request): the schedule fires, its report arrives.
    podman("restart", *[n for n in workers if service_of(n) != "scheduler"], timeout=600)
    podman("restart", *containers("scheduler"), timeout=600)
    wait_workers_healthy()
    after = {readyz(name)["checks"]["config"]["fingerprint"] for name in workers}
    assert len(after) == 1 and after != before, (before, after)
    wait_for(
        lambda: delivered_files(stack, SCHEDULED),
        f"a report of the new schedule {SCHEDULED} in the reports volume",
        timeout=60 + REPORT_TIMEOUT,
        about="scheduler",
    )
    # In the schedule's own folder, named <title>-<date>-<request tag>.pdf
    named = re.compile(r"[a-z0-9.-]+-\d{4}-\d{2}-\d{2}-[0-9a-f]{8}\.pdf")
    files = delivered_files(stack, SCHEDULED)
    assert files and all(named.fullmatch(f) for f in files), files


async def test_down_then_up_keeps_the_ledger_and_the_artefacts(stack: Stack) -> None:
    before = (await entries(stack, [FIRST]))[FIRST]
    assert len(mails_to(f"ci-{TAG}@company.com")) == 1  # still once (the catcher forgets on down)
    [artefact] = before.artefacts
    scheduled = delivered_files(stack, SCHEDULED)  # `file` deliveries on the reports volume
    compose("down", timeout=300)  # volumes stay
    assert containers(running=False) == []
    bring_up()
    after = (await entries(stack, [FIRST]))[FIRST]
    assert after.status == "delivered" and after.artefacts == before.artefacts
    stored = s3().get_object(Bucket="pressroom-artefacts", Key=artefact.key)["Body"].read()
    assert len(stored) == artefact.size
    assert s3_keys(S3_BUCKET, S3_PREFIX) == [f"{S3_PREFIX}{FIRST}.pdf"]
    assert tags(delivered_files(stack, f"ci-{TAG}")) == [request_tag(FIRST)]
    assert set(scheduled) <= set(delivered_files(stack, SCHEDULED)), scheduled
    # and the stack still delivers
    again = f"ci-{TAG}-after-restart"
    await publish(stack, report(again, [{"channel": "file", "path": f"ci-{TAG}"}]))
    await all_delivered(stack, [again])
    assert tags(delivered_files(stack, f"ci-{TAG}")) == sorted(map(request_tag, [FIRST, again]))


def test_the_image_runs_the_cli_and_renders_a_pdf(tmp_path: Path) -> None:
    assert "Usage: pressroom" in podman("run", "--rm", "localhost/pressroom:latest", "--help")
    tmp_path.chmod(0o777)  # written by the image's non-root user
    podman(
        "run", "--rm", "-v", f"{tmp_path}:/app/out", "localhost/pressroom:latest",
        "render", "-t", "daily.html", "--data-file", "/app/templates/samples/portfolio.json",
        "-o", "/app/out/daily.pdf",
    )  # fmt: skip
    assert (tmp_path / "daily.pdf").read_bytes().startswith(b"%PDF")
