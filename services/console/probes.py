"""Try the configured integrations now: SMTP, a webhook, one data source."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from services.distributor.channels.email import (
    check_recipients,
    smtp_session,
    validate_addresses,
)
from services.distributor.channels.webhook import WebhookChannel
from services.fetcher.core import gather_context
from services.fetcher.sources import default_sources
from shared.errors import PressroomError
from shared.events import ReportRequested, Source
from shared.schedules import load_schedules
from shared.settings import Settings


async def check_email(cfg: Settings, to: str | None) -> str:
    """Connect, STARTTLS, log in (as configured) and optionally send a test message — only
    to a recipient a delivery could reach (PRESSROOM_EMAIL_ALLOW): a check that passes for an
    address every real delivery to it would be refused would say something untrue."""

    if not cfg.smtp_host:
        raise PressroomError("PRESSROOM_SMTP_HOST is not set")
    recipients = validate_addresses(to) if to else []
    check_recipients(recipients, cfg.email_allow_list)

    def probe() -> str:
        steps = [f"connected to {cfg.smtp_host}:{cfg.smtp_port}"]
        steps += ["STARTTLS ok"] if cfg.smtp_starttls else []
        steps += ["login ok"] if cfg.smtp_user else []
        try:
            with smtp_session(cfg) as smtp:
                smtp.noop()
                if recipients:
                    message = EmailMessage()
                    message["From"], message["To"] = cfg.smtp_from, ", ".join(recipients)
                    message["Subject"] = "Pressroom test message"
                    message.set_content("Pressroom can send email with this configuration.")
                    smtp.send_message(message)
                    steps.append(f"test message sent to {', '.join(recipients)}")
        except PressroomError as error:
            raise PressroomError(f"email check failed: {error.reason}") from None
        return "ok: " + ", ".join(steps)

    return await asyncio.to_thread(probe)


async def check_webhook(cfg: Settings, url: str) -> str:
    """Send a signed test ping, under the same SSRF rules as a delivery."""

    body = json.dumps({"type": "pressroom.test"}).encode()
    try:
        code, target = await WebhookChannel(cfg).post_signed(
            url, body, f"msg_test_{int(time.time())}"
        )
    except PressroomError as error:
        raise PressroomError(f"webhook check failed: {error.reason}") from None
    return f"ok: {target.origin.host} ({target.address}) accepted a signed test ping ({code})"


PROMETHEUS_PROBE = "PRESSROOM_PROMETHEUS_URL"  # the name `sources test` gives that default


def testable_sources(cfg: Settings) -> dict[str, tuple[str, Source]]:
    """What `sources test` can try, by qualified name, with its kind: the config file's
    sources (NAME); the sources the schedules' requests define themselves (SCHEDULE/NAME — a
    schedule's source that names a config-file source is that one); and the default
    Prometheus that requests' own `prometheus` sources use (PRESSROOM_PROMETHEUS_URL)."""
    found: dict[str, tuple[str, Source]] = {}
    for name, spec in cfg.sources.items():
        source = Source(name=re.sub(r"\W", "_", name), source=name)
        found[name] = (str(spec.get("kind", "?")), source)
    now = datetime.now(UTC)
    for schedule in load_schedules(cfg.schedules):
        for source in schedule.request_for(now).sources:
            if source.source is None:
                found[f"{schedule.name}/{source.name}"] = (source.kind, source)
    if cfg.prometheus_url:
        probe = Source(name="prometheus", kind="prometheus", query="vector(1)")
        found.setdefault(PROMETHEUS_PROBE, ("prometheus", probe))
    return found


def matching_sources(
    cfg: Settings, name: str, sources: dict[str, tuple[str, Source]] | None = None
) -> dict[str, tuple[str, Source]]:
    """The sources `name` may mean, of `sources` (default: `testable_sources`): a qualified
    name's one; else every source called that — the config file's and each schedule's own
    (what a metric or alert labels `source`) — so that none of them goes untested. A
    PressroomError when there is none."""
    sources = testable_sources(cfg) if sources is None else sources
    if name in sources and "/" in name:
        return {name: sources[name]}
    found = {key: entry for key, entry in sources.items() if key.rpartition("/")[2] == name}
    if not found:
        known = ", ".join(sorted(sources)) or "none configured"
        raise PressroomError(
            f"no source '{name}' in the config file's sources or its schedules' requests "
            f"(known: {known})"
        )
    return found


async def fetch_source(cfg: Settings, source: Source) -> tuple[Any, float]:
    """One source fetched now, exactly as a request naming it would (a config-file source:
    the operator's, trusted; a schedule's own: as that schedule's request), with the seconds
    it took."""

    request = ReportRequested(template="sources-test.html", sources=[source])
    started = time.monotonic()
    context = await gather_context(request, default_sources(), cfg)
    return context[source.name], time.monotonic() - started
