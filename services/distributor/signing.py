"""Which key signs a webhook: each calling system its own, the operator's requests the shared one.

A receiver verifies a delivery with the secret of the caller it expects; with one secret for
every caller, any caller's webhook to it would verify (and only `requested_by` in the body would
tell them apart). So a caller's request signs with its own `PRESSROOM_WEBHOOK_SECRETS` entry,
and a caller without one is refused, unless the operator says it may use
`PRESSROOM_WEBHOOK_SECRET` (`PRESSROOM_WEBHOOK_SECRET_FALLBACK=true`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from shared.errors import PermanentError
from shared.settings import ConfigError, Settings, parse_webhook_secrets


def tenant_secrets(settings: Settings) -> dict[str, str]:
    """{calling system: its secret}, from PRESSROOM_WEBHOOK_SECRETS and its file (read once);
    a ConfigError (naming the setting, never a secret) when unusable."""
    secrets = _read(
        settings.webhook_secrets, settings.webhook_secrets_file, settings.webhook_secret
    )
    return dict(secrets)


@cache
def _read(text: str, path: Path | None, shared: str | None) -> dict[str, str]:
    try:
        given = parse_webhook_secrets(text)
    except ValueError as error:
        raise ConfigError(f"PRESSROOM_WEBHOOK_SECRETS: {error}") from None
    if path is not None:
        where = f"PRESSROOM_WEBHOOK_SECRETS_FILE ({path})"
        try:
            listed = parse_webhook_secrets(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{where}: cannot read it ({error.strerror})") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise ConfigError(f"{where}: {error}") from None
        for name, secret in listed.items():
            if given.get(name, secret) != secret:
                raise ConfigError(
                    f"PRESSROOM_WEBHOOK_SECRETS and {where} give '{name}' different secrets"
                )
            given[name] = secret
    owners: dict[str, str] = {}
    for name, secret in given.items():
        if secret == shared:
            raise ConfigError(
                f"PRESSROOM_WEBHOOK_SECRETS: '{name}' has PRESSROOM_WEBHOOK_SECRET's secret; "
                "each caller needs its own"
            )
        if secret in owners:
            raise ConfigError(
                f"PRESSROOM_WEBHOOK_SECRETS: '{name}' and '{owners[secret]}' share a secret; "
                "each caller needs its own"
            )
        owners[secret] = name
    return given


def signing_secret(settings: Settings, tenant: str | None) -> str:
    """The secret a delivery for `tenant`'s request (None: the operator's own) is signed with."""
    if tenant is not None:
        own = tenant_secrets(settings).get(tenant)
        if own is not None:
            return own
        if not settings.webhook_secret_fallback:
            raise PermanentError(
                f"webhook refused: '{tenant}' has no signing secret of its own (add "
                f"{tenant}=whsec_… to PRESSROOM_WEBHOOK_SECRETS, or set "
                "PRESSROOM_WEBHOOK_SECRET_FALLBACK=true to sign it with the shared secret)"
            )
    if not settings.webhook_secret:
        raise PermanentError("webhook channel needs PRESSROOM_WEBHOOK_SECRET to sign bodies")
    return settings.webhook_secret
