"""What a default backup keeps of a request: no secret, whatever shape the text is in."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.console.redact import redacted_letter, redacted_text
from shared.events import DeadLetter

PREVIEW = (
    '{"request_id": "r1", "sources": [{"url": "https://h.example/x?token=S1&sig=S2&page=1", '
    '"headers": {"Authorization": "Bearer S3", "X-Api-Key": "S4"}}, '
    '{"url": "https://u:S5@h.example/x"}], "params": {"pwd": "S6", "login": {"passwd": "S7'
)  # cut off, as the preview of a body over 256 KB is


def letter(payload: str, encoding: str = "utf-8") -> DeadLetter:
    now = datetime.now(UTC)
    return DeadLetter(
        subject="report.requested", payload=payload, payload_encoding=encoding,  # type: ignore[arg-type]
        headers={"Authorization": "Bearer S8", "X-Trace": "token=S9"}, stage="fetcher",
        reason="cannot reach https://h.example/x?api_key=S10", permanent=True, attempts=1,
        first_failure=now, last_failure=now, request_id="r1",
    )  # fmt: skip


@pytest.mark.parametrize("encoding", ["utf-8", "base64"])
def test_a_preview_that_is_not_json_keeps_no_secret(encoding: str) -> None:
    raw = PREVIEW if encoding == "utf-8" else base64.b64encode(b"\xff" + PREVIEW.encode()).decode()
    kept = redacted_letter(letter(raw, encoding)).model_dump_json()
    assert not any(f'S{i}"' in kept or f"S{i}&" in kept or f"S{i}@" in kept for i in range(11))
    assert "S1" not in kept and "S3" not in kept and "S7" not in kept and "S10" not in kept
    assert "h.example" in kept and "page=1" in kept  # what is not secret stays readable


def test_every_pattern_is_linear_in_a_crafted_megabyte() -> None:
    # A quadratic pattern would take hours on these (the test's timeout would stop it).
    for crafted in ["token" * 200_000, "?" + "a-" * 500_000, "x://" + "a" * 1_000_000,
                    '"' + "a" * 1_000_000]:  # fmt: skip
        assert redacted_text(crafted) == crafted
    assert redacted_text("Bearer " + "a" * 1_000_000) == "Bearer REDACTED"
    assert redacted_text('"headers": {' + "a" * 1_000_000) == '"headers": "REDACTED"'
    assert redacted_text("?token=" + "a" * 1_000_000) == "?token=REDACTED"


CANARY = "CANARY-cfg"
CONFIG = f"""\
nats_url: nats://pressroom:{CANARY}-nats@nats.internal:4222
monitor_url: https://prom:{CANARY}-mon@prom.internal
s3_access_key: {CANARY}-s3-access
source_credentials:
  crm:
    base_url: https://crm.example.com/api
    token: {CANARY}-crm-token
sources:
  billing:
    kind: http
    url: https://billing.example.com/export?api_key={CANARY}-billing-qs
  weather:
    kind: http
    url: https://api.weather.example/v1;key={CANARY}-path-param
    params: {{appid: {CANARY}-weather-param}}
schedules:
  - name: nightly
    cron: '0 6 * * *'
    request:
      template: hello.html
      sources:
        - name: s
          kind: http
          url: https://h.example/x
          headers: {{X-Api-Key: {CANARY}-sched-header}}
      deliver: [{{channel: webhook, url: 'https://hooks.example/in?token={CANARY}-sched-hook'}}]
delivery_defaults:
  - {{channel: webhook, url: 'https://hooks.example/in?token={CANARY}-default-hook'}}
"""


def test_a_backups_config_and_config_check_keep_no_secret_anywhere_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets hide in URLs, parameters and schedules' requests too, not only in the fields
    named for them: neither the archived config.yaml nor `pressroom config check` shows one."""
    from services.console.redact import redacted_config
    from shared.settings import load_settings, masked

    archived = redacted_config(CONFIG)
    assert CANARY not in archived, [line for line in archived.splitlines() if CANARY in line]
    # What the operator needs to read the backup stays: names, hosts, paths, parameter names.
    for kept in ("billing.example.com/export?api_key=", "crm.example.com/api", "appid", "nightly"):
        assert kept in archived, kept

    path = tmp_path / "pressroom.yaml"
    path.write_text(CONFIG)
    for name in [k for k in os.environ if k.startswith("PRESSROOM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PRESSROOM_CONFIG", str(path))
    shown = json.dumps(masked(load_settings()))
    assert CANARY not in shown, [part for part in shown.split(",") if CANARY in part]
    assert "api.weather.example/v1;key=***" in shown


def test_a_request_in_a_backup_loses_every_kind_of_secret_field() -> None:
    from services.console.redact import redacted_json

    request = {
        "params": {"user": "ann", "pin": "S1", "jwt": "S2", "appid": "S3", "passphrase": "S4"},
        "pdf": {"password": "S5"},
    }
    kept = json.dumps(redacted_json(request))
    assert not any(f'"S{i}"' in kept for i in range(1, 6)), kept
    assert '"ann"' in kept
