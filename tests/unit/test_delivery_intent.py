"""Each delivery's intent before it is sent, its outcome after (PITFALLS: SMTP has no
de-duplication): two attempts at once send once, and an attempt that died while sending is
followed by a send that says it may be a second one."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from services.distributor.core import SENDING_FRESH, distribute, outcome_key
from services.distributor.parcel import Parcel
from shared.adapters.memory import MemoryKeyValue
from shared.adapters.store import MemoryArtefacts, artefact_key, sha256_hex
from shared.errors import TransientError
from shared.events import Artefact, ChannelResult, Delivery, ReportRendered, ReportRequested
from shared.settings import Settings

PDF = b"%PDF-1.7 a report\n"


class CountingMail:
    """An email channel that counts what it sends, and can be held mid-send."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.sending = asyncio.Event()

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult:
        self.sending.set()
        await self.hold.wait()
        self.sent.append(parcel.request_id)
        return ChannelResult(channel="email", ok=True, target="a@example.com", detail="")


async def rendered(store: MemoryArtefacts, rid: str) -> ReportRendered:
    request = ReportRequested(
        request_id=rid,
        template="weekly.html",
        deliver=[Delivery(channel="email", to=["a@example.com"])],  # type: ignore[call-arg]
        requested_at=datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
    )
    key = artefact_key(rid, "pdf", request.requested_at)
    await store.put(key, PDF, content_type="application/pdf")
    artefact = Artefact(
        format="pdf", key=key, size=len(PDF), sha256=sha256_hex(PDF), content_type="application/pdf"
    )
    return ReportRendered(
        request=request, artefacts=[artefact], template_version="v1", render_seconds=0.1
    )


def run(event: ReportRendered, mail: CountingMail, store: Any, outcomes: Any) -> Any:
    settings = Settings(email_allow="example.com")  # type: ignore[call-arg]
    return distribute(
        event, channels={"email": mail}, store=store, outcomes=outcomes, settings=settings
    )


async def test_two_attempts_at_once_send_once() -> None:
    store, outcomes, mail = MemoryArtefacts(), MemoryKeyValue(), CountingMail()
    event = await rendered(store, "r1")
    key = outcome_key("r1", 0, event.request.deliver[0])
    # An earlier attempt failed (the server said 451): both replays of it find that record.
    await outcomes.put(key, json.dumps({"ok": False, "channel": "email"}).encode())
    mail.hold.clear()
    first = asyncio.create_task(run(event, mail, store, outcomes))
    await mail.sending.wait()  # the first is sending; the second comes now
    with pytest.raises(TransientError, match="another attempt is sending") as busy:
        await run(event, mail, store, outcomes)
    assert busy.value.retry_after and busy.value.retry_after > SENDING_FRESH - 10
    mail.hold.set()
    delivered = await first
    assert mail.sent == ["r1"] and delivered.channels[0].ok
    # The second's retry finds the first's outcome: delivered before, not sent again.
    again = await run(event, mail, store, outcomes)
    assert mail.sent == ["r1"] and again.channels[0].ok


async def test_a_send_after_an_attempt_died_sending_says_it_may_be_a_second() -> None:
    store, outcomes, mail = MemoryArtefacts(), MemoryKeyValue(), CountingMail()
    event = await rendered(store, "r2")
    key = outcome_key("r2", 0, event.request.deliver[0])
    died = time.time() - SENDING_FRESH - 5  # its intent, and no outcome: killed mid-send
    await outcomes.put(key, json.dumps({"ok": False, "state": "sending", "at": died}).encode())
    delivered = await run(event, mail, store, outcomes)
    assert mail.sent == ["r2"]
    [channel] = delivered.channels
    assert channel.ok and "an earlier attempt was interrupted while sending" in channel.detail
    recorded = json.loads((await outcomes.get(key)).value)
    assert recorded["ok"] and "interrupted" in recorded["detail"]


def test_a_send_that_may_last_longer_is_waited_for_longer() -> None:
    from services.distributor.core import sending_fresh

    assert sending_fresh(Settings()) == SENDING_FRESH  # type: ignore[call-arg]
    slow = Settings(s3_timeout=300)  # type: ignore[call-arg]
    assert sending_fresh(slow) == 600
