"""One readiness rule for a stage's consumer (worker /readyz, `pressroom health`), and health."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nats.js import JetStreamContext

from shared.bus.topology import STREAM
from shared.observe.health import _RANK as RANK
from shared.observe.health import Check, CheckResult
from shared.settings import Settings, config_fingerprint

if TYPE_CHECKING:
    import httpx

    from services.console.ops import Bus


def consumer_readiness(info: Any, max_pending: int, *, seen_by_worker: bool) -> CheckResult:
    """How a stage's durable consumer is doing, from its JetStream consumer info.

    - a backlog over `max_pending` messages is `degraded` (the stage falls behind);
    - seen from outside (`pressroom health`), nobody pulling and nothing in progress is
      `unhealthy`: no worker runs for the stage. A worker asking about its own consumer is
      itself that worker, and between two pulls it is not waiting: the rule does not apply.
    """
    pending = int(info.num_pending or 0)
    in_progress = int(info.num_ack_pending or 0)
    pulls = int(info.num_waiting or 0)
    over = pending > max_pending
    detail = f"{pending} waiting" + (f" (over {max_pending})" if over else "")
    detail += f", {in_progress} in progress"
    data = {"pending": pending, "in_progress": in_progress}
    if seen_by_worker:
        return CheckResult("degraded" if over else "healthy", detail, data)
    detail += f", {pulls} worker pull(s)"
    if not pulls and not in_progress:
        return CheckResult("unhealthy", detail + " — no worker is running", data)
    return CheckResult("degraded" if over else "healthy", detail, data)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        return f"unreadable: {error.strerror or error}"


def config_check(settings: Settings) -> Check:
    """A worker's configuration, for its /readyz: the fingerprint of what it loaded at start
    (`pressroom health` compares the workers'), and `degraded` once the config file on disk
    is no longer the one it loaded — an edited file applies only after a restart."""
    from shared.observe.logging import get_logger

    fingerprint = config_fingerprint(settings)
    path = settings.config
    loaded = _file_digest(path) if path is not None else ""
    told: set[str] = set()  # the log says it once per change, the check every time

    async def check() -> CheckResult:
        data = {"fingerprint": fingerprint}
        if path is None:
            return CheckResult("healthy", f"fingerprint {fingerprint} (no config file)", data)
        now = _file_digest(path)
        if now != loaded:
            what = "is unreadable" if now.startswith("unreadable") else "changed"
            detail = (
                f"{path} {what} since this worker started; it still runs config "
                f"{fingerprint}: restart it to apply"
            )
            if now not in told:
                told.add(now)
                get_logger("pressroom.config").warning("config file changed", reason=detail)
            return CheckResult("degraded", detail, data)
        return CheckResult("healthy", f"fingerprint {fingerprint}", data)

    return check


async def stage_readiness(
    js: JetStreamContext, durable: str, max_pending: int, *, seen_by_worker: bool
) -> CheckResult:
    info = await js.consumer_info(STREAM, durable)
    return consumer_readiness(info, max_pending, seen_by_worker=seen_by_worker)


async def stack_health(cfg: Settings, workers: dict[str, str]) -> dict[str, Any]:
    """What `pressroom health` reports: NATS, each stage's consumer (by the rule above), dead
    letters, the artefact store, the cluster, and each worker's own /readyz."""
    import httpx

    from services.console.cluster import cluster_components
    from services.console.ops import BusUnavailable, open_bus

    components: dict[str, dict[str, Any]] = {}
    try:
        async with open_bus(cfg, setup=False) as bus:
            components.update(await _bus_components(bus, cfg))
    except BusUnavailable as error:
        components["nats"] = {"status": "unhealthy", "detail": error.reason}
    except Exception as error:
        components["nats"] = {"status": "unhealthy", "detail": f"{type(error).__name__}: {error}"}
    components.update(await cluster_components(cfg))  # servers, stream and bucket leaders
    if components["nats"]["status"] == "unhealthy" and workers:
        # Workers answering /readyz serve some bus, not the one we cannot reach: listing them
        # as healthy would say the stack works when the CLI is pointed at the wrong place.
        components["workers"] = {
            "status": "unhealthy",
            "detail": f"not checked ({', '.join(workers)}): the bus at {cfg.bus_url_public} "
            "is unreachable from here",
        }
        workers = {}
    fingerprints: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for name, base in workers.items():
            components[f"worker {name}"], fingerprint = await _worker(client, base)
            if fingerprint:
                fingerprints[name] = fingerprint
    if fingerprints:
        components["config"] = config_agreement(fingerprints)
    worst = max((c["status"] for c in components.values()), key=lambda s: RANK[s])
    return {"status": worst, "components": components}


async def _bus_components(bus: Bus, cfg: Settings) -> dict[str, dict[str, Any]]:
    from shared.bus.topology import DLQ_STREAM, STAGES

    info = await bus.js.stream_info(STREAM)
    found: dict[str, dict[str, Any]] = {
        "nats": {
            "status": "healthy",
            "detail": f"{cfg.bus_url_public}, {info.state.messages} events stored",
        }
    }
    for stage in STAGES.values():
        result = await stage_readiness(
            bus.js, stage.durable, cfg.health_max_pending, seen_by_worker=False
        )
        found[f"consumer {stage.durable}"] = {"status": result.status, "detail": result.detail}
    count = int((await bus.js.stream_info(DLQ_STREAM)).state.messages)
    found["dead letters"] = {
        "status": "degraded" if count else "healthy",
        "detail": f"{count} waiting (pressroom dlq ls)" if count else "none",
    }
    try:
        store = await bus.store()
        await asyncio.wait_for(store.check(), 5)
        found["artefact store"] = {"status": "healthy", "detail": type(store).__name__}
    except Exception as error:
        found["artefact store"] = {"status": "unhealthy", "detail": str(error)}
    return found


def config_agreement(fingerprints: dict[str, str]) -> dict[str, Any]:
    """Do the workers run one configuration? `fingerprints`: worker → its config fingerprint."""
    groups: dict[str, list[str]] = {}
    for name, fingerprint in sorted(fingerprints.items()):
        groups.setdefault(fingerprint, []).append(name)
    if len(groups) == 1:
        [fingerprint] = groups
        return {
            "status": "healthy",
            "detail": f"{len(fingerprints)} worker(s) run config {fingerprint}",
        }
    # Most workers first: the odd ones out are the ones to restart (or to look at).
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return {
        "status": "degraded",
        "detail": "workers run different configs: "
        + "; ".join(f"{fp}: {', '.join(names)}" for fp, names in ranked)
        + " (docs/operations.md, Config rollouts)",
    }


async def _worker(client: httpx.AsyncClient, base: str) -> tuple[dict[str, Any], str | None]:
    import httpx

    try:
        response = await client.get(base.rstrip("/") + "/readyz")
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return {"status": "unhealthy", "detail": f"no answer from {base}: {error}"}, None
    checks = body.get("checks", {})
    failing = [k for k, v in checks.items() if v.get("status") != "healthy"]
    fingerprint = checks.get("config", {}).get("fingerprint")
    return {
        "status": body.get("status", "unhealthy"),
        "detail": ", ".join(f"{k}: {checks[k]['detail']}" for k in failing) or "all checks pass",
    }, fingerprint if isinstance(fingerprint, str) else None
