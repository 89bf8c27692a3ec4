"""Egress checks without servers: path prefixes, per-target limits, deadlines, format widths."""

from __future__ import annotations

import asyncio

import pytest
from jinja2.exceptions import SecurityError
from markupsafe import Markup

from services.distributor.targets import TargetLimits, target_of
from services.fetcher.access import Credential, check_bound, plain_path
from services.renderer.templating import Sandbox
from shared.adapters import egress
from shared.errors import PermanentError, TransientError
from shared.events import Delivery
from shared.settings import Settings

BOUND = Credential(
    name="scoped", origins=(egress.origin_of("https://api.example.com"),), prefixes=("/v2",)
)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/../admin",
        "/v2/..;/admin",
        "/v2/.;x/../admin",
        "/v2/%2e%2e/admin",
        "/v2/%2E%2e;/admin",
        "/v2/%252e%252e/admin",
        "/v2/.%252e/admin",
        "/v2/%2e%2e%2fadmin",
        "/v2/..%5cadmin",
        "/v2/%25252e%25252e/admin",
    ],
)
def test_every_spelling_of_a_dot_segment_fails_the_prefix_check(path: str) -> None:
    with pytest.raises(PermanentError, match=r"segments|too many times"):
        check_bound(BOUND, f"https://api.example.com{path}", "source 'x'")


def test_a_bound_credential_stays_under_its_prefix() -> None:
    check_bound(BOUND, "https://api.example.com/v2/reports?page=2", "source 'x'")
    assert plain_path("https://api.example.com/v2/100%25/x", "s") == "/v2/100%25/x"
    with pytest.raises(PermanentError, match="bound to the path"):
        check_bound(BOUND, "https://api.example.com/v2x/reports", "source 'x'")


async def test_one_target_gets_its_limit_plus_as_many_waiting_then_is_handed_back() -> None:
    limits = TargetLimits(limit=1, waiting=1)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def deliver(target: str) -> None:
        async with limits.slot(target):
            entered.set()
            await release.wait()

    first = asyncio.create_task(deliver("webhook slow:80"))
    await entered.wait()
    second = asyncio.create_task(deliver("webhook slow:80"))  # waits for the first
    while limits.held("webhook slow:80") < 2:
        await asyncio.sleep(0)
    with pytest.raises(TransientError, match="handed back"):
        await deliver("webhook slow:80")
    async with limits.slot("file"):  # another target is not held up
        pass
    release.set()
    await asyncio.gather(first, second)
    assert limits.held("webhook slow:80") == 0


def test_the_limits_leave_other_targets_a_slot() -> None:
    settings = Settings(distributor_concurrency=4, delivery_target_limit=4)
    limits = TargetLimits.from_settings(settings)
    assert limits.limit + limits.waiting < settings.distributor_concurrency
    hook = Delivery.model_validate({"channel": "webhook", "url": "https://Hooks.example.com/a"})
    assert target_of(hook, settings) == "webhook hooks.example.com:https"


async def test_a_deadline_ends_the_whole_call_with_a_transient_reason() -> None:
    with pytest.raises(TransientError, match=r"no complete answer within 0\.05s"):
        async with egress.deadline(0.05, "webhook https://slow"):
            await asyncio.Event().wait()
    with pytest.raises(TimeoutError):  # a timeout of the call's own is not relabelled
        async with egress.deadline(60, "webhook https://slow"):
            raise TimeoutError


@pytest.mark.parametrize(
    "source",
    [
        '{{ "{:{w}}".format(1, w=w) }}',
        '{{ "{0:>{1}}".format("x", w) }}',
        '{{ "{a:{w}.{w}}".format_map({"a": 1.5, "w": w}) }}',
        "{{ m.format(1, w=w) }}",
        '{{ ("{:" ~ w ~ "}").format(1) }}',
    ],
)
def test_a_format_width_is_checked_before_the_string_is_built(source: str) -> None:
    template = Sandbox().from_string(source)
    with pytest.raises(SecurityError, match="width of 999999999"):
        template.render(w=999_999_999, m=Markup("<b>{:{w}}</b>"))


def test_ordinary_formats_still_work() -> None:
    out = Sandbox().from_string('{{ "{:>5}|{:.2f}|{:,}".format("a", 1.234, 1234567) }}').render()
    assert out == "    a|1.23|1,234,567"
