"""One readiness rule for a stage's consumer: a worker's /readyz and `pressroom health` use it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from shared.bus.names import STREAM
from shared.observe.health import Check, CheckResult
from shared.observe.logging import get_logger
from shared.settings import Settings, config_fingerprint


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
