"""One HTTP status → error mapping for data sources and webhooks (shared/adapters/egress.py
status_error).

Sources (services/fetcher/access.py get_json) and webhooks (services/distributor/channels/
webhook.py) both raise what it returns; the real-server tests in tests/integration/
(test_sources.py: 429 with Retry-After, test_distribution.py: 503 with Retry-After) cover the
wiring, these the mapping itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from services.distributor.channels.webhook import WebhookChannel
from shared.adapters.egress import MAX_RETRY_AFTER, status_error
from shared.errors import PermanentError, TransientError
from shared.settings import Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize("code", [200, 201, 202, 204])
def test_a_2xx_is_no_error(code: int) -> None:
    assert status_error("source 'x'", code, httpx.Headers()) is None


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504, 507, 508, 511, 520, 524])
def test_timeouts_too_early_rate_limits_and_server_errors_are_retried(code: int) -> None:
    error = status_error("source 'x'", code, httpx.Headers())
    assert isinstance(error, TransientError)
    assert error.reason == f"source 'x' answered {code}"
    assert error.retry_after is None


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 413, 422, 501, 505])
def test_other_client_and_server_errors_are_permanent(code: int) -> None:
    error = status_error("webhook https://hooks.example.com", code, httpx.Headers())
    assert isinstance(error, PermanentError)
    assert error.reason == f"webhook https://hooks.example.com answered {code}"


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_says_so(code: int) -> None:
    error = status_error("webhook https://hooks.example.com", code, httpx.Headers())
    assert isinstance(error, PermanentError)
    assert error.reason.endswith(f"answered {code} redirect (not followed)")


def test_410_gone_disables_the_endpoint() -> None:
    error = status_error("webhook https://hooks.example.com", 410, httpx.Headers())
    assert isinstance(error, PermanentError) and "410 Gone: endpoint disabled" in error.reason


def test_retry_after_in_seconds_or_as_a_date_is_how_long_to_wait() -> None:
    seconds = status_error("x", 429, httpx.Headers({"Retry-After": "7"}))
    assert isinstance(seconds, TransientError) and seconds.retry_after == 7.0

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    dated = status_error("x", 503, httpx.Headers({"retry-after": when}))
    assert isinstance(dated, TransientError) and dated.retry_after is not None
    assert 100 < dated.retry_after <= 120

    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    gone_by = status_error("x", 503, httpx.Headers({"Retry-After": past}))
    assert isinstance(gone_by, TransientError) and gone_by.retry_after == 0.0

    huge = status_error("x", 429, httpx.Headers({"Retry-After": "99999999"}))
    assert isinstance(huge, TransientError) and huge.retry_after == MAX_RETRY_AFTER

    unreadable = status_error("x", 429, httpx.Headers({"Retry-After": "soon"}))
    assert isinstance(unreadable, TransientError) and unreadable.retry_after is None


@pytest.mark.parametrize(
    ("code", "kind"), [(425, TransientError), (429, TransientError), (410, PermanentError)]
)
async def test_a_webhook_raises_the_mapped_error(code: int, kind: type[Exception]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, headers={"Retry-After": "3"})

    channel = WebhookChannel(
        Settings(webhook_secret=SECRET, webhook_allow="127.0.0.1"),
        transport=httpx.MockTransport(answer),
    )
    with pytest.raises(kind) as caught:
        await channel.post_signed("http://127.0.0.1:9/hook", b"{}", "msg_1")
    assert f"answered {code}" in str(caught.value.args[0])
    if kind is TransientError:
        assert caught.value.retry_after == 3.0  # type: ignore[attr-defined]
