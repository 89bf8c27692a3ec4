"""A calling system's deliveries stay its own: S3 keys in its folder, webhooks its own key."""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path

import pytest

from services.distributor.channels.s3 import check_target
from services.distributor.channels.webhook import sign, verify
from services.distributor.signing import signing_secret, tenant_secrets
from shared.errors import PermanentError
from shared.settings import ConfigError, Settings


def whsec(seed: str) -> str:
    return "whsec_" + base64.b64encode(seed.encode().ljust(32, b"-")).decode()


SHARED, ALPHA, BETA = whsec("shared"), whsec("alpha"), whsec("beta")


def test_a_tenants_s3_key_lands_in_its_own_folder_under_the_allowed_prefix() -> None:
    cfg = Settings(s3_delivery_allow="company-reports/portfolio,whole-bucket")
    key = "portfolio/weekly-2026-12-07.html"
    assert (
        check_target("company-reports", key, cfg, "beta") == "portfolio/beta/weekly-2026-12-07.html"
    )
    assert (
        check_target("company-reports", key, cfg, "alpha")
        == "portfolio/alpha/weekly-2026-12-07.html"
    )
    assert check_target("whole-bucket", "a/b.pdf", cfg, "alpha") == "alpha/a/b.pdf"
    # The operator's own requests (scheduler, CLI) write the key as asked.
    assert check_target("company-reports", key, cfg) == key
    # Naming the victim's folder only goes deeper into one's own.
    aimed = check_target("company-reports", "portfolio/beta/weekly-2026-12-07.html", cfg, "alpha")
    assert aimed == "portfolio/alpha/beta/weekly-2026-12-07.html"
    with pytest.raises(PermanentError, match="not in PRESSROOM_S3_DELIVERY_ALLOW"):
        check_target("company-reports", "other/x.html", cfg, "alpha")


def test_nested_allowed_prefixes_never_give_two_tenants_one_key() -> None:
    cfg = Settings(s3_delivery_allow="bucket/p,bucket/p/beta")
    written: dict[str, set[str]] = {}
    for tenant in ("alpha", "beta"):
        for key in ("p/x", "p/alpha/x", "p/beta/x", "p/beta/alpha/x", "p/alpha/beta/x"):
            with contextlib.suppress(PermanentError):
                written.setdefault(check_target("bucket", key, cfg, tenant), set()).add(tenant)
    assert written and all(len(owners) == 1 for owners in written.values()), written


def test_each_tenant_signs_with_its_own_secret_and_the_operator_with_the_shared_one() -> None:
    cfg = Settings(webhook_secret=SHARED, webhook_secrets=f"alpha={ALPHA}, beta={BETA}")
    assert signing_secret(cfg, "alpha") == ALPHA
    assert signing_secret(cfg, "beta") == BETA
    assert signing_secret(cfg, None) == SHARED
    stamp = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(signing_secret(cfg, "alpha"), "msg_1", stamp, b"{}"),
    }
    assert verify(ALPHA, headers, b"{}")
    assert not verify(BETA, headers, b"{}")
    assert not verify(SHARED, headers, b"{}")


def test_a_tenant_without_its_own_secret_is_refused_unless_the_operator_allows_the_shared_one() -> (
    None
):
    cfg = Settings(webhook_secret=SHARED, webhook_secrets=f"alpha={ALPHA}")
    with pytest.raises(PermanentError, match="'gamma' has no signing secret") as refused:
        signing_secret(cfg, "gamma")
    assert SHARED not in str(refused.value) and ALPHA not in str(refused.value)
    allowed = Settings(webhook_secret=SHARED, webhook_secret_fallback=True)
    assert signing_secret(allowed, "gamma") == SHARED


def test_tenant_secrets_come_from_a_file_too_and_are_checked(tmp_path: Path) -> None:
    listed = tmp_path / "webhook-secrets"
    listed.write_text(f"# one line per caller\nalpha={ALPHA}\nbeta = {BETA}\n")
    cfg = Settings(webhook_secret=SHARED, webhook_secrets_file=listed)
    assert tenant_secrets(cfg) == {"alpha": ALPHA, "beta": BETA}
    for text, reason in [
        (f"alpha={ALPHA}\nbeta={ALPHA}\n", "share a secret|another caller's secret"),
        (f"alpha={SHARED}\n", "PRESSROOM_WEBHOOK_SECRET's secret"),
        ("alpha=whsec_c2hvcnQ=\n", "the secret of 'alpha' is 5 bytes"),
        (f"Alpha Corp={ALPHA}\n", "expects name=whsec_"),
    ]:
        bad = tmp_path / f"bad-{len(text)}-{abs(hash(text))}"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=reason) as error:
            tenant_secrets(Settings(webhook_secret=SHARED, webhook_secrets_file=bad))
        assert ALPHA not in str(error.value) and SHARED not in str(error.value)
    with pytest.raises(ValueError, match="another caller's secret"):
        Settings(webhook_secrets=f"alpha={ALPHA},beta={ALPHA}")


def test_tenant_secrets_never_show_in_the_settings_repr() -> None:
    cfg = Settings(webhook_secrets=f"alpha={ALPHA}")
    assert ALPHA not in repr(cfg)
