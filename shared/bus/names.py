"""Every stream, bucket, consumer and header name on the bus, defined once: the topology declares
them, the stages use them, and the console's permission builder grants them."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import (
    DATA_READY,
    REPORT_DELIVERED,
    REPORT_RENDERED,
    REPORT_REQUESTED,
    TENANT_REQUESTS,
)

STREAM = "PRESSROOM"
DLQ_STREAM = "PRESSROOM_DLQ"
ADVISORY_STREAM = "PRESSROOM_ADVISORIES"
LEDGER_BUCKET = "pressroom_ledger"
DELIVERIES_BUCKET = "pressroom_deliveries"
CACHE_BUCKET = "pressroom_cache"
SCHEDULES_BUCKET = "pressroom_schedules"
RENDER_CACHE_BUCKET = "pressroom_render_cache"  # the renderer's own, not the fetcher's
OBJECT_BUCKET = "pressroom_artefacts"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True)
class StageSpec:
    """A pipeline stage: the durable consumer it reads with and what it publishes next."""

    name: str
    consumes: str
    produces: str

    @property
    def durable(self) -> str:
        return self.name

    @property
    def advisory_subject(self) -> str:
        return f"{MAX_DELIVERIES_ADVISORY}.{STREAM}.{self.durable}"

    @property
    def filter_subjects(self) -> list[str]:
        """What its consumer reads: the fetcher also each tenant's `report.requested.<name>`."""
        if self.consumes == REPORT_REQUESTED:
            return [REPORT_REQUESTED, TENANT_REQUESTS]
        return [self.consumes]


FETCHER = StageSpec("fetcher", REPORT_REQUESTED, DATA_READY)
RENDERER = StageSpec("renderer", DATA_READY, REPORT_RENDERED)
DISTRIBUTOR = StageSpec("distributor", REPORT_RENDERED, REPORT_DELIVERED)
STAGES: dict[str, StageSpec] = {s.name: s for s in (FETCHER, RENDERER, DISTRIBUTOR)}


def msg_id(request_id: str, stage: str) -> str:
    """The de-duplication id of what `stage` publishes for `request_id`."""
    return f"{request_id}:{stage}"
