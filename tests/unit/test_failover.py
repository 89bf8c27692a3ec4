"""Server lists, retries across a leader election, reconnect log lines and the cluster health."""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import NoServersError, UnexpectedEOF
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from structlog.testing import capture_logs

from services.console.cluster import stream_component
from shared.adapters.failover import FailoverLedger, FailoverPublisher
from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryPublisher
from shared.bus.failover import ConnectionEvents
from shared.events import DataReady, ReportDelivered, ReportRendered, ReportRequested
from shared.settings import Settings
from shared.urls import public_url


def test_the_url_list_becomes_the_server_list_nats_py_wants() -> None:
    settings = Settings(nats_url=" nats://n1:4222, nats://n2:4222 ,nats://n3:4222,")
    assert settings.nats_servers == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    assert Settings(nats_url=None, nats_port=4333).nats_servers == ["nats://127.0.0.1:4333"]


def test_no_password_or_token_is_ever_shown() -> None:
    settings = Settings(
        nats_url="nats://ops:s3cret@n1:4222,tls://t0ken@n2:4222,n3:4222,ops:pw0rd@n4:4222"
    )
    assert settings.bus_url_public == "nats://n1:4222,tls://n2:4222,n3:4222,n4:4222"
    for secret in ("s3cret", "t0ken", "pw0rd"):
        assert secret not in settings.bus_url_public
    assert public_url("nats://n1:4222") == "nats://n1:4222"


class Flaky(MemoryPublisher):
    """Answers like a stream without a leader `failures` times, then like the new leader."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures = failures
        self.error = error
        self.attempts = 0

    async def publish(self, *args: Any, **kwargs: Any) -> api.PubAck:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        return await super().publish(*args, **kwargs)


async def test_a_publish_rides_out_an_election_with_the_same_message_id() -> None:
    inner = Flaky(3, NatsTimeoutError())
    ack = await FailoverPublisher(inner, patience=5).publish("data.ready", b"{}", msg_id="r:f")
    assert inner.attempts == 4 and ack.seq == 1
    assert [m.msg_id for m in inner.messages] == ["r:f"]


async def test_without_patience_the_first_failure_is_the_answer() -> None:
    inner = Flaky(1, NatsTimeoutError())
    with pytest.raises(NatsTimeoutError):
        await FailoverPublisher(inner, patience=0).publish("data.ready", b"{}", msg_id="r:f")
    assert inner.attempts == 1


async def test_errors_that_are_not_an_election_are_not_retried() -> None:
    inner = Flaky(1, ValueError("bad subject"))
    with pytest.raises(ValueError):
        await FailoverPublisher(inner, patience=5).publish("data.ready", b"{}", msg_id="r:f")
    assert inner.attempts == 1


class FakeClient:
    def __init__(self) -> None:
        self.is_closed = False
        self.connected_url: Any = None


async def test_losing_a_server_is_one_line_and_getting_another_is_one_more() -> None:
    client = FakeClient()
    other: list[Exception] = []

    async def on_error(error: Exception) -> None:
        other.append(error)

    events = ConnectionEvents("pressroom-renderer", lambda: client, on_error)  # type: ignore[arg-type,return-value]
    with capture_logs() as logs:
        await events.error(UnexpectedEOF())
        await events.disconnected()
        for _ in range(5):  # the dead server refuses, again and again
            await events.error(ConnectionRefusedError(111, "refused"))
            await events.disconnected()
        await events.error(NoServersError())
        client.connected_url = type("Url", (), {"geturl": lambda self: "nats://u:p@n2:4222"})()
        await events.reconnected()
    assert [line["event"] for line in logs] == ["bus disconnected, reconnecting", "bus reconnected"]
    assert logs[0]["cause"].startswith("UnexpectedEOF")
    assert logs[1]["server"] == "nats://n2:4222" and logs[1]["failed_attempts"] == 6
    assert other == []

    await events.error(PermissionError("nats: permissions violation for publish to x"))
    assert len(other) == 1  # not a reconnect: reported at once


async def test_closing_on_purpose_is_not_reported_as_a_lost_server() -> None:
    client = FakeClient()
    client.is_closed = True

    async def on_error(error: Exception) -> None:
        raise AssertionError(error)

    events = ConnectionEvents("cli", lambda: client, on_error)  # type: ignore[arg-type,return-value]
    with capture_logs() as logs:
        await events.disconnected()
    assert logs == []


def info(leader: str | None, replicas: int, followers: list[dict[str, Any]]) -> api.StreamInfo:
    return api.StreamInfo.from_response(
        {
            "config": {"name": "PRESSROOM", "num_replicas": replicas},
            "state": {
                "messages": 0,
                "bytes": 0,
                "first_seq": 0,
                "last_seq": 0,
                "consumer_count": 0,
            },
            "cluster": {"name": "c", "leader": leader, "replicas": followers},
        }
    )


def peer(name: str, *, current: bool = True, active: float = 0.1, offline: bool = False) -> Any:
    return {"name": name, "current": current, "active": int(active * 1e9), "offline": offline}


def test_health_of_a_stream_with_every_replica_current() -> None:
    row = stream_component(info("n1", 3, [peer("n2"), peer("n3")]), wanted=3)
    assert row["status"] == "healthy"
    assert row["detail"] == "leader n1 · R3: n2 current, n3 current"


def test_health_of_a_stream_missing_a_replica_is_degraded_and_names_it() -> None:
    row = stream_component(info("n1", 3, [peer("n2"), peer("n3", current=False, active=12)]), 3)
    assert row["status"] == "degraded"
    assert "n3 not heard from for 12s" in row["detail"]


def test_health_of_a_stream_without_a_majority_is_unhealthy() -> None:
    away = [peer("n2", current=False, active=20), peer("n3", offline=True, current=False)]
    row = stream_component(info("n1", 3, away), 3)
    assert row["status"] == "unhealthy" and "no majority" in row["detail"]
    assert stream_component(info(None, 3, []), 3)["status"] == "unhealthy"


def test_health_says_how_to_get_the_replicas_asked_for() -> None:
    row = stream_component(info("n1", 1, []), wanted=3)
    assert row["status"] == "degraded"
    assert "restart a service to scale it up to R3" in row["detail"]


async def test_a_late_renderer_record_does_not_undo_a_delivery_in_the_ledger() -> None:
    # Through the failover wrapper the workers use: it hands back the entry that settled the
    # report, from which the report's duration is counted (lost once: no metric at all).
    ledger = FailoverLedger(KvLedger(MemoryKeyValue()), patience=1)  # type: ignore[arg-type]
    request = ReportRequested(request_id="r1", template="portfolio.html")
    rendered = ReportRendered(
        request=request, artefacts=[], template_version="v", render_seconds=0.1
    )
    for seq, stage in enumerate(("fetcher", "renderer", "distributor"), start=1):
        await ledger.claim("r1", stage, seq=seq, attempt=1, request=request)
    await ledger.finish("r1", "fetcher", seconds=0.1, event=DataReady(request=request, context={}))
    delivered = ReportDelivered(
        request_id="r1", template="portfolio.html", artefacts=[], channels=[]
    )
    settled = await ledger.finish("r1", "distributor", seconds=0.1, event=delivered)
    assert settled is not None and settled.settled == "delivered"
    late = await ledger.finish("r1", "renderer", seconds=0.1, event=rendered)  # a slow KV write
    assert late is None  # settled once
    entry = await ledger.get("r1")
    assert entry is not None and entry.status == "delivered"
    assert {s: r.state for s, r in entry.stages.items()} == dict.fromkeys(
        ("fetcher", "renderer", "distributor"), "done"
    )


async def test_the_failover_ledger_says_when_a_stage_settles_a_report_as_the_ledger_does() -> None:
    """The report-duration metric is recorded from what finish/fail return: in production the
    ledger is wrapped, so the wrapper must pass that answer on."""
    ledger = FailoverLedger(KvLedger(MemoryKeyValue()), patience=1.0)  # type: ignore[arg-type]
    request = ReportRequested(request_id="r2", template="portfolio.html")
    await ledger.claim("r2", "distributor", seq=1, attempt=1, request=request)
    delivered = ReportDelivered(
        request_id="r2", template="portfolio.html", artefacts=[], channels=[]
    )
    settled = await ledger.finish("r2", "distributor", seconds=0.1, event=delivered)
    assert settled is not None and settled.status == "delivered"

    await ledger.claim("r3", "fetcher", seq=2, attempt=1, request=request)
    failed = await ledger.fail("r3", "fetcher", reason="source 'x' answered 404")
    assert failed is not None and failed.status == "failed"
