"""The single `publisher` identity serves a deployment without named calling systems; once
systems are named, publisher.nk is retired, so no identity keeps the operator's unbound
credentials and sources beside tenants who may not use them (a review's finding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.console.identities import generate, public_key
from shared.bus.identity import checked_tenant
from shared.errors import PermanentError


def test_naming_calling_systems_retires_the_single_publisher(tmp_path: Path) -> None:
    first = generate(tmp_path)
    assert first.tenants == ["publisher"] and not first.retired
    single = public_key((tmp_path / "publisher.nk").read_text().strip())
    assert single in (tmp_path / "auth.conf").read_text()
    named = generate(tmp_path, publishers=["alpha"])
    assert named.tenants == ["alpha"] and named.retired == ["publisher.nk"]
    assert single not in (tmp_path / "auth.conf").read_text()
    again = generate(tmp_path)  # later runs keep the named systems, and not publisher.nk
    assert again.tenants == ["alpha"]


def test_the_default_identitys_name_cannot_be_given_to_a_calling_system() -> None:
    with pytest.raises(PermanentError, match="is the default identity's"):
        checked_tenant("publisher")
    assert checked_tenant("alpha") == "alpha"


def test_each_calling_systems_subject_has_a_consumer_name_of_its_own() -> None:
    from shared.bus.names import FETCHER, intake_of_durable, intake_of_subject

    # Names may hold '-': the lane comes first, so no two subjects share a consumer.
    specs = [
        intake_of_subject("report.requested.alpha-bulk"),
        intake_of_subject("report.requested.alpha.bulk"),
        intake_of_subject("report.requested.alpha"),
        intake_of_subject("report.requested.alpha.interactive"),
    ]
    durables = [spec.durable for spec in specs if spec is not None]
    assert durables == [
        "fetcher-in-normal-alpha-bulk",
        "fetcher-in-bulk-alpha",
        "fetcher-in-normal-alpha",
        "fetcher-in-interactive-alpha",
    ]
    for durable, spec in zip(durables, specs, strict=True):
        assert intake_of_durable(durable) == spec
    assert specs[1] == FETCHER.of_tenant("alpha", "bulk")
    assert specs[1] is not None and specs[1].filter_subjects == ["report.requested.alpha.bulk"]
    # Not a calling system's subject or consumer: the services' own, and names none may have.
    for subject in ("report.requested", "report.requested.Alpha", "report.requested.a.normal"):
        assert intake_of_subject(subject) is None
    for durable in ("fetcher", "fetcher-bulk", "fetcher-in-crashes", "renderer-in-normal-a"):
        assert intake_of_durable(durable) is None


def test_the_fetcher_may_read_the_named_systems_own_consumers_and_no_others() -> None:
    from services.console.identities import permissions

    allowed = permissions("fetcher", ["alpha"])["publish"]
    assert "$JS.API.CONSUMER.MSG.NEXT.PRESSROOM.fetcher-in-normal-alpha" in allowed
    assert "$JS.API.CONSUMER.MSG.NEXT.PRESSROOM.fetcher-in-bulk-alpha" in allowed
    assert not any("fetcher-in-normal-beta" in s for s in allowed)
    assert not any("fetcher-in" in s for s in permissions("renderer", ["alpha"])["publish"])
