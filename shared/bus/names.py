"""Every stream, bucket, consumer and header name on the bus, defined once: the topology declares
them, the stages use them, and the console's permission builder grants them."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import (
    DATA_READY,
    LANE_PREFIX,
    LANED_SUBJECTS,
    LANES,
    REPORT_DELIVERED,
    REPORT_RENDERED,
    REPORT_REQUESTED,
    TENANT_REQUESTS,
    lane_subject,
    tenant_lane_requests,
)

STREAM = "PRESSROOM"
DLQ_STREAM = "PRESSROOM_DLQ"
ADVISORY_STREAM = "PRESSROOM_ADVISORIES"
LEDGER_BUCKET = "pressroom_ledger"
DELIVERIES_BUCKET = "pressroom_deliveries"
CACHE_BUCKET = "pressroom_cache"
SCHEDULES_BUCKET = "pressroom_schedules"
RENDER_CACHE_BUCKET = "pressroom_render_cache"  # the renderer's own, not the fetcher's
ADMISSION_BUCKET = "pressroom_admission"  # reports each requester has queued (shared/admission.py)
OBJECT_BUCKET = "pressroom_artefacts"
# The studio's recorded payloads (keys under STUDIO_PREFIX), in the object store backend: a
# bucket of their own, because the object store cannot list by prefix, and the renderer's prune
# lists them every minute (in the artefacts' bucket that read every artefact's block).
STUDIO_BUCKET = "pressroom_studio"
STUDIO_PREFIX = "studio/"
SLO_BUCKET = "pressroom_slo"  # the SLO index the console keeps (services/console/sloindex.py)
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True)
class StageSpec:
    """A pipeline stage: the durable consumer it reads with and what it publishes next.

    `lane` (shared/lanes.py): the stage's `interactive` and `bulk` work is read by consumers of
    its own (`renderer-bulk` on `lane.bulk.data.ready`), so neither waits behind the other."""

    name: str
    consumes: str
    produces: str
    lane: str = "normal"

    @property
    def durable(self) -> str:
        return self.name if self.lane == "normal" else f"{self.name}-{self.lane}"

    def in_lane(self, lane: str) -> StageSpec:
        return StageSpec(self.name, lane_subject(self.consumes, lane), self.produces, lane)

    @property
    def lanes(self) -> list[StageSpec]:
        """The stage's consumers: the normal lane (the plain subjects) and each other lane."""
        return [self, *(self.in_lane(lane) for lane in LANES)]

    @property
    def advisory_subject(self) -> str:
        return f"{MAX_DELIVERIES_ADVISORY}.{STREAM}.{self.durable}"

    @property
    def filter_subjects(self) -> list[str]:
        """What its consumer reads: the fetcher also each tenant's `report.requested.<name>`."""
        if self.consumes == REPORT_REQUESTED and self.lane == "normal":
            # `lane.normal.…`: a request a cap moved down from the lane it asked for
            return [REPORT_REQUESTED, TENANT_REQUESTS, f"{LANE_PREFIX}normal.{REPORT_REQUESTED}"]
        if self.name == "fetcher":  # a tenant's request straight into a lane
            return [self.consumes, tenant_lane_requests(self.lane)]
        return [self.consumes]


LANE_SUBJECTS = [f"{LANE_PREFIX}*.{subject}" for subject in LANED_SUBJECTS]
FETCHER = StageSpec("fetcher", REPORT_REQUESTED, DATA_READY)
RENDERER = StageSpec("renderer", DATA_READY, REPORT_RENDERED)
DISTRIBUTOR = StageSpec("distributor", REPORT_RENDERED, REPORT_DELIVERED)
STAGES: dict[str, StageSpec] = {s.name: s for s in (FETCHER, RENDERER, DISTRIBUTOR)}


def msg_id(request_id: str, stage: str) -> str:
    """The de-duplication id of what `stage` publishes for `request_id`."""
    return f"{request_id}:{stage}"
