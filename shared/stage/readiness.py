"""One readiness rule for a stage's consumers (one per lane): a worker's /readyz and `pressroom
health` use it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.bus.names import STREAM, StageSpec
from shared.observe.health import Check, CheckResult, worst_of
from shared.observe.logging import get_logger
from shared.settings import Settings, config_fingerprint


def consumer_readiness(
    info: Any, max_pending: int, *, seen_by_worker: bool, worked: bool = False
) -> CheckResult:
    """How a stage's durable consumer is doing, from its JetStream consumer info.

    - a backlog over `max_pending` messages is `degraded` (the stage falls behind);
    - seen from outside (`pressroom health`), nobody pulling and nothing in progress is
      `unhealthy`: no worker runs for the stage. A worker asking about its own consumer is
      itself that worker, and between two pulls it is not waiting: the rule does not apply;
      nor when the stage's workers are `worked` on its other consumers (the fetcher's share
      their slots: one of them may wait for a slot, with no pull of its own).
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
    if not pulls and not in_progress and not worked:
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
    js: JetStreamContext,
    stage: StageSpec,
    max_pending: int,
    *,
    seen_by_worker: bool,
    callers: Sequence[StageSpec] = (),
) -> dict[str, CheckResult]:
    """Each of the stage's consumers by the rule above, by durable name: its normal lane's
    (`renderer`) and each other lane's (`renderer-interactive`, `renderer-bulk`), and the
    fetcher's `callers` (each calling system's own, `fetcher-in-normal-alpha`)."""
    lanes = [*stage.lanes, *callers]
    infos = await asyncio.gather(
        *(js.consumer_info(STREAM, lane.durable) for lane in lanes), return_exceptions=True
    )
    for info in infos:
        if isinstance(info, BaseException) and not isinstance(info, NotFoundError):
            raise info  # the bus itself: the caller says so
    # The fetcher's consumers share its slots: one of them may have no pull and nothing in
    # progress while its fetcher works on the others' messages. Seen from outside, "no worker"
    # is then said only when none of them has a pull or a message in progress.
    worked = callers and any(
        not isinstance(i, BaseException) and (i.num_waiting or i.num_ack_pending) for i in infos
    )
    found = {}
    for lane, info in zip(lanes, infos, strict=True):
        if isinstance(info, BaseException):  # one lane's consumer gone: that row says so
            maker = (
                "no fetcher reads this calling system's requests: is it named in `pressroom bus "
                "auth --publisher`?"
                if lane.tenant
                else "`pressroom bus setup` makes it again"
            )
            detail = f"missing ({maker})"
            found[lane.durable] = CheckResult("unhealthy", detail, {"pending": 0, "in_progress": 0})
        else:
            found[lane.durable] = consumer_readiness(
                info, max_pending, seen_by_worker=seen_by_worker, worked=bool(worked)
            )
    return found


def lanes_together(results: dict[str, CheckResult]) -> CheckResult:
    """A worker's one `consumer` check over its stage's consumers: the worst of them, naming
    the ones not healthy (all healthy: the totals), and each consumer's figures in the data."""
    status = worst_of(r.status for r in results.values())
    pending = sum(int(r.data["pending"]) for r in results.values())
    in_progress = sum(int(r.data["in_progress"]) for r in results.values())
    if status == "healthy":
        detail = f"{pending} waiting, {in_progress} in progress ({', '.join(results)})"
    else:
        detail = "; ".join(
            f"{name}: {r.detail}" for name, r in results.items() if r.status != "healthy"
        )
    consumers = {name: {"status": r.status, **r.data} for name, r in results.items()}
    data = {"pending": pending, "in_progress": in_progress, "consumers": consumers}
    return CheckResult(status, detail, data)
