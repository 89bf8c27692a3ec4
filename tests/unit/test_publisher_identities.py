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
