"""Issue 28 in small pieces: metric series at 0, file names, SMTP refusals, delivery ids."""

from __future__ import annotations

import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from services.distributor.channels.email import refusal
from services.distributor.parcel import Parcel
from shared import metrics
from shared.adapters.store import MemoryArtefacts
from shared.errors import PermanentError, TransientError
from shared.events import Delivery, ReportRendered, ReportRequested
from shared.filenames import (
    MAX_FOLDER_STEM,
    MAX_STEM,
    folder_filename,
    report_filename,
    request_tag,
)
from shared.observe.telemetry import prometheus_reader, setup_telemetry
from tests.helpers import unique


@pytest.fixture(autouse=True)
def operator_lists() -> Iterator[None]:
    """prepare_worker sets process-wide label lists: other tests here expect none."""
    listed, expected = dict(metrics._listed), dict(metrics._expected)
    names = dict(metrics._file_names)
    yield
    metrics._file_names.clear()
    metrics._file_names.update(names)
    metrics._listed.clear()
    metrics._listed.update(listed)
    metrics._expected.clear()
    metrics._expected.update(expected)


def scrape() -> str:
    setup_telemetry("pressroom-test")
    reader = prometheus_reader()
    assert reader is not None
    body, _ = reader.render("", zeros=metrics.expected_series())
    return body.decode()


def test_a_worker_shows_every_series_it_can_emit_at_zero_before_any_event() -> None:
    template = unique("tpl") + ".html"
    metrics.prepare_worker("renderer", [template], [("prices", "http")])
    text = scrape()
    for line in (
        f'pressroom_renders_total{{outcome="failed",template="{template}"}} 0.0',
        'pressroom_failures_total{reason="template_error",stage="renderer",'
        f'template="{template}"}} 0.0',
    ):
        assert line in text, line
    # formats are shared by every template: other tests of this process may have recorded some
    assert 'pressroom_report_size_bytes_count{format="html"}' in text
    failed = f'outcome="failed",template="{template}",trigger="schedule"'
    assert f"pressroom_report_duration_seconds_count{{{failed}}} 0.0" in text
    assert f'pressroom_report_duration_seconds_bucket{{le="+Inf",{failed}}} 0.0' in text
    # the renderer never settles a delivered report: no such series declared there
    assert f'outcome="delivered",template="{template}"' not in text

    # once recorded, the real value replaces the zero (one series, not two)
    metrics.stage_failed("renderer", "template_error", template, None)
    text = scrape()
    key = f'pressroom_renders_total{{outcome="failed",template="{template}"}}'
    assert [line for line in text.splitlines() if line.startswith(key)] == [f"{key} 1.0"]


def test_request_chosen_source_names_fall_into_other() -> None:
    metrics.prepare_worker("fetcher", [], [("prices", "http")])
    assert metrics.bounded("source", "prices") == "prices"
    assert metrics.bounded("source", unique("junk")) == "other"
    assert metrics.bounded("kind", "http") == "http"
    assert metrics.bounded("kind", unique("junk")) == "other"


def request(**fields: object) -> ReportRequested:
    base: dict[str, object] = {
        "request_id": "req-af200b153dc64d26",
        "template": "weekly_portfolio.html",
        "requested_at": datetime(2026, 11, 23, 6, 0, tzinfo=UTC),
    }
    return ReportRequested.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({}, "weekly-portfolio-2026-11-23.pdf"),
        ({"params": {"report_title": "Ventes — Été 2026"}}, "ventes-ete-2026-2026-11-23.pdf"),
        ({"filename": "{template}_{short_id}"}, "weekly_portfolio_3dc64d26.pdf"),
        ({"filename": "../../etc/{period}"}, "etc-2026-11-23.pdf"),
        ({"filename": "x" * 90}, "x" * MAX_STEM + ".pdf"),
        ({"filename": "{}"}, None),
    ],
)
def test_file_names_come_from_the_pattern_sanitised_and_short(
    fields: dict[str, object], name: str | None
) -> None:
    if name is None:
        with pytest.raises(PermanentError, match="filename pattern"):
            report_filename(request(**fields), "pdf")
        return
    assert report_filename(request(**fields), "pdf") == name


def test_folder_files_carry_the_title_the_date_and_a_tag_that_a_long_title_cannot_cut() -> None:
    long_title = {"report_title": "Quarterly portfolio review for the board of directors " * 3}
    first = request(request_id="req-one", params=long_title)
    one = folder_filename(first, "pdf")
    two = folder_filename(request(request_id="req-two", params=long_title), "pdf")
    assert one != two and len(one) <= MAX_FOLDER_STEM + len(".pdf")
    date = first.requested_at.strftime("%Y-%m-%d")
    assert one.startswith("quarterly-portfolio-review") and one.endswith(
        f"-{date}-{request_tag('req-one')}.pdf"
    )
    # The request's own pattern wins, as for attachments.
    named = request(request_id="req-one", filename="{title}-{date}")
    assert folder_filename(named, "pdf") == report_filename(named, "pdf")


def test_the_longest_name_does_not_fold_in_an_email() -> None:
    longest = report_filename(request(filename="y" * 200), "html")
    message = EmailMessage(policy=email.policy.default)
    message.set_content("x")
    message.add_attachment(b"x", maintype="text", subtype="html", filename=longest)
    assert "filename*" not in message.as_string()


def test_greylisting_at_rcpt_is_transient_and_a_5xx_is_permanent() -> None:
    assert isinstance(refusal("refused", {"a@x": (451, b"greylisted")}), TransientError)
    assert isinstance(refusal("refused", {"a@x": (451, b""), "b@x": (550, b"")}), PermanentError)
    assert isinstance(refusal("refused", {"a@x": (550, b"no such user")}), PermanentError)


def test_a_delivery_id_is_stable_per_delivery_new_per_occasion_and_hides_the_request_id() -> None:
    event = ReportRendered(
        request=request(), artefacts=[], template_version="v", render_seconds=0.1
    )
    store = MemoryArtefacts()
    hook = Delivery.model_validate({"channel": "webhook", "url": "https://example.com/h"})
    other = Delivery.model_validate({"channel": "webhook", "url": "https://example.com/i"})
    first = Parcel(event=event, store=store).delivery_id(hook)
    assert first == Parcel(event=event, store=store).delivery_id(hook)  # a retry
    assert first != Parcel(event=event, store=store).delivery_id(other)
    assert first != Parcel(event=event, store=store, occasion="manual-1").delivery_id(hook)
    assert "af200b153dc64d26" not in first and first.startswith("msg_")


def test_a_template_named_without_its_suffix_counts_under_its_file_name() -> None:
    template = unique("tpl")
    metrics.prepare_worker("renderer", [f"{template}.html"])
    assert metrics.template_label(template) == f"{template}.html"
    assert metrics.template_label(f"{template}.html") == f"{template}.html"
    assert metrics.template_label(unique("junk")) == "other"


def test_an_s3_key_may_use_the_sanitised_file_name() -> None:
    from services.distributor.channels.s3 import destination_key

    event = ReportRendered(
        request=request(params={"report_title": "Weekly Portfolio"}),
        artefacts=[],
        template_version="v",
        render_seconds=0.1,
    )
    parcel = Parcel(event=event, store=MemoryArtefacts())
    key = destination_key("reports/{date}/{filename}", parcel, "pdf", 1)
    assert key == "reports/2026-11-23/weekly-portfolio-2026-11-23.pdf"
