"""What fails for good and what is retried; configuration that is wrong stops at once."""

from __future__ import annotations

from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from shared.errors import PermanentError, TemplateError, TransientError, classify
from shared.settings import ConfigError, Settings, load_settings, masked, unknown_environment


@pytest.mark.parametrize(
    "error",
    [
        TemplateError("x"),
        MemoryError(),
        RecursionError(),
        OverflowError("Range too big"),
        ZeroDivisionError(),
        IndexError(),
        KeyError("k"),
        ValueError("Header values may not contain linefeed"),
        TypeError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        nats.errors.MaxPayloadError(),
    ],
)
def test_input_template_and_resource_cap_errors_are_permanent(error: BaseException) -> None:
    assert classify(error) == "permanent"


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        ConnectionRefusedError(),
        TimeoutError(),
        OSError(28, "No space left on device"),
        nats.errors.TimeoutError(),
        nats.errors.NoServersError(),
        nats.js.errors.ServiceUnavailableError(),
        RuntimeError("something unforeseen"),  # unknown: retried, but only a bounded number
    ],
)
def test_network_broker_store_and_unknown_errors_are_transient(error: BaseException) -> None:
    assert classify(error) == "transient"


def test_pressroom_errors_keep_their_own_verdict() -> None:
    assert classify(PermanentError("no")) == "permanent"
    assert classify(TransientError("later")) == "transient"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("PRESSROOM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_a_missing_config_file_is_an_error_naming_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PRESSROOM_CONFIG", "/nonexistent/pressroom.yaml")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "PRESSROOM_CONFIG names '/nonexistent/pressroom.yaml'" in caught.value.reason


def test_the_config_file_can_be_given_directly(tmp_path: Path, clean_env: object) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  up: {kind: prometheus, query: up}\n")
    assert Settings(config=config).sources == {"up": {"kind": "prometheus", "query": "up"}}


@pytest.mark.parametrize(
    ("yaml_text", "reason"),
    [
        ("source_credential:\n  github: {token: x}\n", "did you mean `source_credentials`"),
        ("source_credentials:\n  github: {tokn: x}\n", "unknown keys ['tokn']"),
        ("sources:\n  x: {kind: ftp}\n", "needs a kind"),
        ("sources:\n  daily/x: {kind: prometheus, query: up}\n", "cannot hold '/'"),
        ("delivery_defaults:\n  - {channel: fax}\n", "delivery_defaults"),
        ("render_timeout: -3\n", "`render_timeout` in PRESSROOM_CONFIG"),
    ],
)
def test_unknown_keys_and_invalid_values_in_the_file_are_refused(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, yaml_text: str, reason: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    clean_env.setenv("PRESSROOM_CONFIG", str(config))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("PRESSROOM_RETRY_BACKOFF", "1,x", "PRESSROOM_RETRY_BACKOFF: expects comma-separated"),
        ("PRESSROOM_RENDER_TIMEOUT", "-1", "PRESSROOM_RENDER_TIMEOUT"),
        ("PRESSROOM_RENDER_MEMORY_MB", "-5", "PRESSROOM_RENDER_MEMORY_MB"),
        ("PRESSROOM_WEBHOOK_SECRET", "whsec_not base64!", "valid base64"),
        ("PRESSROOM_WEBHOOK_SECRET", "whsec_YWJj", "at least 24"),
        ("PRESSROOM_RENDER_TIMOUT", "5", "did you mean PRESSROOM_RENDER_TIMEOUT?"),
    ],
)
def test_invalid_or_misspelt_variables_are_refused_naming_them(
    clean_env: pytest.MonkeyPatch, name: str, value: str, reason: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert reason in caught.value.reason


def test_only_real_settings_pass_the_environment_check() -> None:
    assert unknown_environment({"PRESSROOM_LOG_LEVEL": "INFO", "HOME": "/root"}) == []
    assert unknown_environment({"PRESSROOM_NATZ_URL": "x"}) == [
        "PRESSROOM_NATZ_URL is not a Pressroom setting (did you mean PRESSROOM_NATS_URL?)"
    ]


def test_the_effective_configuration_masks_every_secret(clean_env: object) -> None:
    cfg = Settings(
        smtp_password="hunter2",
        s3_secret_key="s3cr3t",
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        source_credentials={"github": {"token": "ghp_x", "api_url": "https://api.github.com"}},
    )
    shown = str(masked(cfg))
    assert not any(s in shown for s in ("hunter2", "s3cr3t", "MfKQ9r8", "ghp_x"))
    assert "https://api.github.com" in shown
