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
    TENANT_NAME,
    lane_subject,
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
    its own (`renderer-bulk` on `lane.bulk.data.ready`), so neither waits behind the other.

    `tenant`: where one calling system's requests come in (`report.requested.<tenant>[.<lane>]`),
    read by a consumer of its own (`fetcher-in-<lane>-<tenant>`), so that no system's flood —
    invalid, over its rate, or held past its share — is read before another's requests."""

    name: str
    consumes: str
    produces: str
    lane: str = "normal"
    tenant: str | None = None

    @property
    def durable(self) -> str:
        if self.tenant is not None:
            return f"{self.name}{INTAKE_INFIX}{self.lane}-{self.tenant}"
        return self.name if self.lane == "normal" else f"{self.name}-{self.lane}"

    def in_lane(self, lane: str) -> StageSpec:
        return StageSpec(self.name, lane_subject(self.consumes, lane), self.produces, lane)

    def of_tenant(self, tenant: str, lane: str = "normal") -> StageSpec:
        """The consumer of one calling system's requests on its subject for `lane`."""
        subject = f"{REPORT_REQUESTED}.{tenant}" + ("" if lane == "normal" else f".{lane}")
        return StageSpec(self.name, subject, self.produces, lane, tenant)

    @property
    def lanes(self) -> list[StageSpec]:
        """The stage's consumers: the normal lane (the plain subjects) and each other lane."""
        return [self, *(self.in_lane(lane) for lane in LANES)]

    @property
    def advisory_subject(self) -> str:
        return f"{MAX_DELIVERIES_ADVISORY}.{STREAM}.{self.durable}"

    @property
    def filter_subjects(self) -> list[str]:
        """What its consumer reads: the normal lane of the fetcher also what a cap moved down
        from the lane it asked for (`lane.normal.report.requested`)."""
        if self.consumes == REPORT_REQUESTED and self.lane == "normal" and self.tenant is None:
            return [REPORT_REQUESTED, f"{LANE_PREFIX}normal.{REPORT_REQUESTED}"]
        return [self.consumes]


LANE_SUBJECTS = [f"{LANE_PREFIX}*.{subject}" for subject in LANED_SUBJECTS]
FETCHER = StageSpec("fetcher", REPORT_REQUESTED, DATA_READY)
RENDERER = StageSpec("renderer", DATA_READY, REPORT_RENDERED)
DISTRIBUTOR = StageSpec("distributor", REPORT_RENDERED, REPORT_DELIVERED)
STAGES: dict[str, StageSpec] = {s.name: s for s in (FETCHER, RENDERER, DISTRIBUTOR)}
# The consumers of the calling systems' own subjects (`fetcher-in-bulk-alpha`), and the one
# catcher of their max-deliveries advisories (it reads all of the stream's and keeps theirs).
INTAKE_INFIX = "-in-"
INTAKE_CRASHES = f"{FETCHER.name}{INTAKE_INFIX}crashes"


def intake_of_subject(subject: str) -> StageSpec | None:
    """The consumer that reads a calling system's subject, or None for any other subject."""
    prefix = f"{REPORT_REQUESTED}."
    if not subject.startswith(prefix):
        return None
    tenant, _, lane = subject[len(prefix) :].partition(".")
    if not TENANT_NAME.match(tenant) or (lane and lane not in LANES):
        return None
    return FETCHER.of_tenant(tenant, lane or "normal")


def intake_of_durable(durable: str) -> StageSpec | None:
    """The calling system's consumer a durable name is (`fetcher-in-normal-alpha`), or None."""
    prefix = f"{FETCHER.name}{INTAKE_INFIX}"
    lane, _, tenant = durable.removeprefix(prefix).partition("-")
    if not durable.startswith(prefix) or lane not in ("normal", *LANES):
        return None
    return FETCHER.of_tenant(tenant, lane) if TENANT_NAME.match(tenant) else None


def msg_id(request_id: str, stage: str) -> str:
    """The de-duplication id of what `stage` publishes for `request_id`."""
    return f"{request_id}:{stage}"
