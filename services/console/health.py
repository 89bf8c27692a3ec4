"""What `pressroom health` reports: NATS, each stage's consumers (one per lane), dead letters, the
store, the cluster, the out folder's disk and each worker's own /readyz."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.console.busaccess import Bus, BusUnavailable, open_bus
from services.console.cluster import cluster_components
from shared.bus.names import DLQ_STREAM, FETCHER, STAGES, STREAM
from shared.bus.topology import intake_subjects
from shared.observe.health import worst_of
from shared.settings import Settings
from shared.stage.readiness import stage_readiness


async def stack_health(cfg: Settings, workers: dict[str, str]) -> dict[str, Any]:
    """What `pressroom health` reports: NATS, each stage's consumers — every lane's — (by the
    rule in shared/stage/readiness.py), dead letters, the artefact store, the cluster, and each
    worker's own /readyz."""
    components: dict[str, dict[str, Any]] = {}
    try:
        async with open_bus(cfg, setup=False) as bus:
            components.update(await _bus_components(bus, cfg))
    except BusUnavailable as error:
        components["nats"] = {"status": "unhealthy", "detail": error.reason}
    except Exception as error:
        components["nats"] = {"status": "unhealthy", "detail": f"{type(error).__name__}: {error}"}
    components.update(await cluster_components(cfg))  # servers, stream and bucket leaders
    components["storage out"] = await _storage_row(cfg)
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
    return {"status": worst_of(c["status"] for c in components.values()), "components": components}


async def _bus_components(bus: Bus, cfg: Settings) -> dict[str, dict[str, Any]]:
    info = await bus.js.stream_info(STREAM)
    found: dict[str, dict[str, Any]] = {
        "nats": {
            "status": "healthy",
            "detail": f"{cfg.bus_url_public}, {info.state.messages} events stored",
        }
    }
    for stage in STAGES.values():  # each lane's consumer: a bulk backlog is a backlog too
        callers = await intake_subjects(bus.js) if stage == FETCHER else []
        lanes = await stage_readiness(
            bus.js, stage, cfg.health_max_pending, seen_by_worker=False, callers=callers
        )
        for durable, result in lanes.items():
            found[f"consumer {durable}"] = {"status": result.status, "detail": result.detail}
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


STORAGE_FULL = 0.8  # PressroomStorageFilling's threshold, the legacy disk check's 80 %
STORAGE_CRITICAL = 0.95
STORAGE_ANSWER = 5.0  # seconds: a hung network filesystem must not stall the console


async def _storage_row(cfg: Settings) -> dict[str, Any]:
    """`out_storage` off the event loop (statvfs on a hung NFS mount blocks)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(out_storage, cfg), STORAGE_ANSWER)
    except TimeoutError:
        return {
            "status": "degraded",
            "detail": f"{cfg.out_dir}: its filesystem did not answer in {STORAGE_ANSWER:.0f} s",
        }


def out_storage(cfg: Settings, usage: Callable[[Path], Any] = shutil.disk_usage) -> dict[str, Any]:
    """The legacy `df` check, seen from where the command runs: how full the filesystem under
    PRESSROOM_OUT_DIR (the `file` channel's folder) is; degraded from 80 %, unhealthy from 95 %."""
    folder = cfg.out_dir
    try:
        if not folder.is_dir():
            raise FileNotFoundError(folder)
        found = usage(folder)
    except OSError:
        return {
            "status": "healthy",
            "detail": f"{folder} is not here: nothing delivered to it from this host, or it is "
            "another host's (the distributors' metric: pressroom_storage_used_bytes)",
        }
    total = found.used + found.free  # as df counts: what is reserved for root aside
    share = found.used / total if total else 0.0
    status = "healthy"
    if share >= STORAGE_FULL:
        status = "unhealthy" if share >= STORAGE_CRITICAL else "degraded"
    free = found.free / 1024**3
    return {"status": status, "detail": f"{folder}: {share:.0%} used, {free:.1f} GiB free"}


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
