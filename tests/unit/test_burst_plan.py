"""Bursting, planned without I/O: each item its own child, its own slice, its own recipients."""

from __future__ import annotations

import json

import pytest

from shared.burst import BurstTally, ChildFailed, ChildPlan, parent_of, plan_children
from shared.errors import PermanentError
from shared.events import ReportRequested, request_fingerprint


def burst_request(**burst: object) -> ReportRequested:
    spec = {
        "over": "accounts.items",
        "key": "id",
        "deliver": [
            {"channel": "email", "to": "{{ item.owner }}", "subject": "Your {{item.id}}"},
            {"channel": "file", "path": "accounts/{{ item.id }}"},
        ],
        **burst,
    }
    return ReportRequested.model_validate(
        {
            "request_id": "monthly",
            "template": "account.html",
            "params": {"period": "May"},
            "burst": spec,
        }
    )


def data(n: int) -> dict[str, object]:
    items = [{"id": f"a{i}", "owner": f"o{i}@example.com", "secret": i} for i in range(n)]
    return {"accounts": {"items": items}, "period": "May", "other": "x"}


def test_each_item_becomes_a_child_with_only_its_own_item_and_recipients() -> None:
    plans = list(plan_children(burst_request(), data(3), max_items=100))
    assert [p.request.request_id for p in plans if isinstance(p, ChildPlan)] == [
        "monthly/a0",
        "monthly/a1",
        "monthly/a2",
    ]
    second = plans[1]
    assert isinstance(second, ChildPlan)
    assert second.context == {"period": "May", "item": data(3)["accounts"]["items"][1]}  # type: ignore[index]
    assert "o0@example.com" not in json.dumps(second.context)
    email, folder = second.request.deliver
    assert email.model_extra == {"to": "o1@example.com", "subject": "Your a1"}
    assert folder.model_extra == {"path": "accounts/a1"}
    assert second.request.priority == "bulk"
    assert second.request.parent == "monthly" and second.request.burst_index == 1
    assert second.request.burst is None
    assert parent_of("monthly/a1") == "monthly" and parent_of("monthly") is None


def test_an_item_that_cannot_be_a_child_fails_alone() -> None:
    rows = data(4)
    items = rows["accounts"]["items"]  # type: ignore[index]
    items[1]["id"] = "../etc"
    del items[2]["owner"]
    items[3]["id"] = "a0"
    plans = list(plan_children(burst_request(), rows, max_items=100))
    failed = [p for p in plans if isinstance(p, ChildFailed)]
    assert [p.index for p in failed] == [1, 2, 3]
    assert "not usable in a request id" in failed[0].reason
    assert "item.owner" in failed[1].reason
    assert "another item before it has the key 'a0'" in failed[2].reason


def test_the_list_itself_is_never_shared_and_a_missing_path_says_what_exists() -> None:
    with pytest.raises(PermanentError, match="holds the list itself"):
        list(plan_children(burst_request(shared=["accounts"]), data(1), max_items=10))
    with pytest.raises(PermanentError, match="top level has: accounts, other, period"):
        list(plan_children(burst_request(over="nope.items"), data(1), max_items=10))
    with pytest.raises(PermanentError, match="over the limit of 2"):
        list(plan_children(burst_request(), data(3), max_items=2))


def test_only_item_placeholders_are_filled() -> None:
    spec = {"deliver": [{"channel": "file", "path": "{{ config.secret }}"}]}
    (plan,) = plan_children(burst_request(**spec), data(1), max_items=10)
    assert isinstance(plan, ChildFailed)
    assert "only {{ item.<field> }}" in plan.reason


def test_the_tally_counts_each_child_once_and_a_replayed_failure_moves_over() -> None:
    tally = BurstTally.planned(10_000)
    assert len(tally.model_dump_json()) < 4000
    tally = tally.record(0, "a0", "delivered") or tally
    assert tally.record(0, "a0", "delivered") is None
    assert tally.record(0, "a0", "failed", "late") is None
    tally = tally.record(7, "a7", "failed", "refused") or tally
    assert tally.record(7, "a7", "failed", "again") is None
    assert tally.summary() == "delivered 1, failed 1, waiting 9,998 (failed: a7)"
    tally = tally.record(7, "a7", "delivered") or tally
    assert (tally.delivered, tally.failed, tally.failures) == (2, 0, {})
    assert tally.is_delivered(7) and not tally.is_delivered(8)


def test_new_fields_keep_old_fingerprints_and_a_priority_is_not_content() -> None:
    plain = ReportRequested(request_id="r1", template="t.html")
    # What the ledger recorded before these fields existed (computed without them).
    assert request_fingerprint(plain) == "000a5bbc17c94b0636d358f7bc44a860"
    assert (
        request_fingerprint(plain.model_copy(update={"priority": "bulk"}))
        == "000a5bbc17c94b0636d358f7bc44a860"
    )
    bursting = ReportRequested.model_validate(
        {
            "request_id": "r1",
            "template": "t.html",
            "burst": {"over": "a", "key": "id", "deliver": [{"channel": "file"}]},
        }
    )
    assert request_fingerprint(plain) != request_fingerprint(bursting)


def test_a_child_id_holds_one_slash_only() -> None:
    ReportRequested(request_id="monthly/a-1", template="t.html", parent="monthly")
    for bad in ("a/b/c", "/x", "a/", "a/../b"):
        with pytest.raises(ValueError):
            ReportRequested(request_id=bad, template="t.html", parent=bad.split("/")[0])


def test_a_cancelled_child_is_counted_as_cancelled_not_failed() -> None:
    tally = BurstTally.planned(4)
    tally = tally.record(0, "a0", "delivered") or tally
    tally = tally.record(1, "a1", "cancelled") or tally
    assert tally.record(1, "a1", "failed", "late") is None  # a cancel stands
    assert tally.record(1, "a1", "cancelled") is None
    assert tally.record(0, "a0", "cancelled") is None  # delivered stays delivered
    tally = tally.record(2, "a2", "failed", "refused") or tally
    assert tally.record(2, "a2", "cancelled") is None  # so does a failure
    assert (tally.delivered, tally.failed, tally.cancelled, tally.complete) == (1, 1, 1, False)
    assert tally.summary() == "delivered 1, failed 1, cancelled 1, waiting 1 (failed: a2)"
    # A delivery under way when the cancel came lands after all: delivered, not cancelled.
    tally = tally.record(1, "a1", "delivered") or tally
    tally = tally.record(3, "a3", "cancelled") or tally
    assert (tally.delivered, tally.failed, tally.cancelled, tally.complete) == (2, 1, 1, True)
    assert [tally.outcome_of(i) for i in range(4)] == [
        "delivered",
        "delivered",
        "failed",
        "cancelled",
    ]
    # A parent's tally stored before cancels were counted apart reads as it did.
    old = BurstTally.planned(3).record(0, "a0", "delivered")
    assert old is not None
    stored = BurstTally.model_validate({**old.model_dump(), "cancelled": False})
    assert (stored.delivered, stored.failed, stored.cancelled) == (1, 0, 0)
