"""The NATS side of `pressroom health`: which servers answer, and who leads each stream and bucket.

Every server in PRESSROOM_NATS_URL is asked on its own (so a dead first node shows as dead, not
as a slow connect), then each stream, KV bucket and the object store is asked for its Raft
leader and replicas. A missing or lagging replica is `degraded` (the cluster still works, with
less margin); a stream without a leader is `unhealthy` (nothing moves until a majority of its
replicas is back).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from nats.js.errors import NotFoundError

from shared.bus.names import (
    ADVISORY_STREAM,
    CACHE_BUCKET,
    DELIVERIES_BUCKET,
    DLQ_STREAM,
    LEDGER_BUCKET,
    OBJECT_BUCKET,
    RENDER_CACHE_BUCKET,
    SCHEDULES_BUCKET,
    STREAM,
    STUDIO_BUCKET,
)
from shared.bus.topology import connect
from shared.settings import Settings
from shared.urls import public_url

PROBE_TIMEOUT = 2.0
SILENT_AFTER = 3.0  # seconds without a word from a replica: it is away, not merely behind


def _seconds(active_ns: int | None) -> float | None:
    """PeerInfo.active: nanoseconds since the leader last heard from that replica."""
    return active_ns / 1e9 if active_ns is not None else None


def topology_streams() -> dict[str, str]:
    """Every JetStream stream Pressroom keeps, by the name health shows for it."""
    streams = {f"stream {s}": s for s in (STREAM, DLQ_STREAM, ADVISORY_STREAM)}
    for bucket in (
        LEDGER_BUCKET,
        DELIVERIES_BUCKET,
        CACHE_BUCKET,
        RENDER_CACHE_BUCKET,
        SCHEDULES_BUCKET,
    ):
        streams[f"KV {bucket}"] = f"KV_{bucket}"
    for objects in (OBJECT_BUCKET, STUDIO_BUCKET):
        streams[f"object store {objects}"] = f"OBJ_{objects}"
    return streams


@dataclass
class ServerProbe:
    url: str  # redacted: shown to users
    name: str | None = None
    version: str | None = None
    cluster: str | None = None
    error: str | None = None

    @property
    def answers(self) -> bool:
        return self.error is None


async def _quiet(error: Exception) -> None:
    """A server that does not answer is the finding, reported once by the probe."""


async def probe_server(settings: Settings, url: str) -> ServerProbe:
    shown = public_url(url)
    seen: list[Exception] = []

    async def remember(error: Exception) -> None:
        seen.append(error)

    try:
        nc = await connect(
            settings,
            name="pressroom-health",
            servers=[url],
            allow_reconnect=False,
            max_reconnect_attempts=1,
            connect_timeout=PROBE_TIMEOUT,
            error_cb=remember,
        )
    except Exception as error:
        # nats-py ends with "no servers available"; the cause is what it met on the way.
        return ServerProbe(shown, error=_short(seen[-1] if seen else error))
    try:
        info: dict[str, Any] = getattr(nc, "_server_info", {}) or {}
        return ServerProbe(
            shown,
            name=info.get("server_name"),
            version=info.get("version"),
            cluster=info.get("cluster"),
        )
    finally:
        await nc.close()


def _short(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return f"no answer within {PROBE_TIMEOUT:g}s"
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


def servers_component(probes: list[ServerProbe]) -> dict[str, Any]:
    up = [p for p in probes if p.answers]
    status = "healthy" if len(up) == len(probes) else "degraded" if up else "unhealthy"
    parts = [
        f"{p.name or '?'} at {p.url}" if p.answers else f"{p.url} does not answer ({p.error})"
        for p in probes
    ]
    cluster = next((p.cluster for p in up if p.cluster), None)
    head = f"{len(up)}/{len(probes)} answer" + (f", cluster {cluster}" if cluster else "")
    return {
        "status": status,
        "detail": f"{head}: " + "; ".join(parts),
        "servers": [p.__dict__ | {"answers": p.answers} for p in probes],
    }


def stream_component(info: Any, wanted: int) -> dict[str, Any]:
    """Leader and replicas of one stream, from its StreamInfo."""
    config_replicas = int(info.config.num_replicas or 1)
    cluster = info.cluster
    leader = cluster.leader if cluster is not None else None
    followers = list(cluster.replicas or []) if cluster is not None else []
    data: dict[str, Any] = {
        "leader": leader,
        "replicas": config_replicas,
        "followers": [
            {
                "name": p.name,
                "current": bool(p.current),
                "offline": bool(p.offline),
                "lag": p.lag,
                "last_seen_seconds": _seconds(p.active),
            }
            for p in followers
        ],
    }
    if not leader:
        return {
            "status": "unhealthy",
            "detail": f"R{config_replicas}, no leader: a majority of its replicas is unreachable",
            **data,
        }
    problems = []
    states = []
    away = 0
    for peer in followers:
        seen = _seconds(peer.active)
        if peer.offline or (not peer.current and seen is not None and seen > SILENT_AFTER):
            away += 1
            states.append(
                f"{peer.name} offline"
                if peer.offline or seen is None
                else f"{peer.name} not heard from for {seen:.0f}s"
            )
        elif not peer.current:
            states.append(f"{peer.name} lagging ({peer.lag or 0} behind)")
        else:
            states.append(f"{peer.name} current")
            continue
        problems.append(peer.name)
    missing = config_replicas - 1 - len(followers)
    if missing > 0:
        states.append(f"{missing} replica(s) not placed")
    detail = f"leader {leader} · R{config_replicas}" + (f": {', '.join(states)}" if states else "")
    reachable = config_replicas - away - max(missing, 0)
    if reachable < config_replicas // 2 + 1:
        # The leader has not stepped down yet (it waits ~10 s), but nothing can be written.
        return {
            "status": "unhealthy",
            "detail": f"{detail} — no majority: {reachable} of {config_replicas} replicas "
            "reachable, nothing can be written",
            **data,
        }
    degraded = bool(problems) or missing > 0
    if config_replicas < wanted:
        degraded = True
        detail += (
            f" — PRESSROOM_STREAM_REPLICAS={wanted}: restart a service to scale it up to R{wanted}"
        )
    return {"status": "degraded" if degraded else "healthy", "detail": detail, **data}


async def cluster_components(settings: Settings) -> dict[str, dict[str, Any]]:
    """`pressroom health` rows for the servers and for every stream and bucket."""
    probes = list(
        await asyncio.gather(*(probe_server(settings, url) for url in settings.nats_servers))
    )
    components = {"nats servers": servers_component(probes)}
    if not any(p.answers for p in probes):
        return components
    try:
        nc = await connect(
            settings,
            name="pressroom-health",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            connect_timeout=PROBE_TIMEOUT,
            error_cb=_quiet,
        )
    except Exception:
        return components  # a server went between the probe and now: its row says enough
    try:
        js = nc.jetstream(timeout=PROBE_TIMEOUT)

        async def one(stream: str) -> dict[str, Any]:
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                return {
                    "status": "unhealthy",
                    "detail": "missing: any Pressroom service creates it when it starts",
                }
            except Exception as error:  # no leader: the request goes unanswered
                return {
                    "status": "unhealthy",
                    "detail": f"no answer ({_short(error)}): no leader elected, a majority of "
                    "its replicas is unreachable",
                }
            return stream_component(info, settings.stream_replicas)

        streams = topology_streams()
        rows = await asyncio.gather(*(one(s) for s in streams.values()))
        components.update(zip(streams, rows, strict=True))
    finally:
        await nc.close()
    return components
