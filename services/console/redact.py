"""Secrets out of what the operator's tools show and keep: configs, ledger entries, dead letters."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import yaml

from shared.adapters.ledger import LedgerEntry
from shared.events import (
    DeadLetter,
)
from shared.settings import SECRET_FIELDS, SECRET_KEY, without_secrets
from shared.urls import mask_path_tokens

# ---- backup and restore ----------------------------------------------------------------------
REDACTED = "REDACTED (pressroom backup --include-secrets keeps it)"


def redacted_config(text: str) -> str:
    """The YAML config without secrets: secret settings, and anywhere in it a secret-named
    key's or parameter's value, every header's value, and in every string what a request's
    text loses (`redacted_text`: secret-named query values, userinfo, path tokens)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        return text
    for field in SECRET_FIELDS & set(data):
        data[field] = REDACTED
    # Strings as a request's are redacted: secrets by name (`?api_key=`), userinfo, tokens in
    # a path, each with the marker restore asks the operator to fill in; other values stay.
    kept = without_secrets(data, REDACTED, text=redacted_text)
    return str(yaml.safe_dump(kept, sort_keys=False))


# In text, a name that says its value is secret (a URL query key, a JSON key, `k=v`).
_SECRET_NAME = re.compile(
    r"authori[sz]ation|token|passw(or)?d|pwd|secret|api[-_]?key|apikey|cookie|credential|"
    r"signature|^sig$|key$|^auth$|^code$|session",
    re.I,
)


# Every pattern is linear in its input (possessive runs, names anchored at a separator): a
# backup reads what tenants sent, and a crafted string must not stall it.
_JSON_PAIR = re.compile(r'"([\w-]{1,100}+)"(\s*+:\s*+")((?:[^"\\]|\\.)*+)("?)')


_HEADERS = re.compile(r'("headers"\s*+:\s*+)\{[^{}]*+\}?', re.I)


_NAME_VALUE = re.compile(r"(?:^|(?<=[?&;\s,]))([\w-]++)=([^&#\s\"',;]*+)")


_USERINFO = re.compile(r"(?<![\w+.-])([A-Za-z][\w+.-]*+://[^/\s:@\"']++:)[^@\s/\"']++@")


_SCHEME_TOKEN = re.compile(r"\b(Bearer|Basic|Token)\s++[A-Za-z0-9._~+/=-]{6,}+", re.I)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redacted_text(text: str) -> str:
    """Secrets out of text that is not (whole) JSON: a dead letter's preview of a large body,
    a reason quoting a URL, a header value."""
    text = _JSON_PAIR.sub(
        lambda m: f'"{m[1]}"{m[2]}REDACTED{m[4]}' if _secret_name(m[1]) else m[0], text
    )
    text = _HEADERS.sub(r'\1"REDACTED"', text)
    text = _NAME_VALUE.sub(lambda m: f"{m[1]}=REDACTED" if _secret_name(m[1]) else m[0], text)
    text = _USERINFO.sub(r"\1REDACTED@", text)
    text = mask_path_tokens(text, "REDACTED")  # a webhook's secret in its path
    return _SCHEME_TOKEN.sub(r"\1 REDACTED", text)


def redacted_json(value: Any) -> Any:
    """A JSON value with every secret-looking field (token, password, Authorization …), every
    request header and every secret in a URL replaced: what a tenant put in a request stays
    out of backups."""
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if SECRET_KEY.search(str(k)) or (k == "headers" and isinstance(v, dict) and v)
                else redacted_json(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted_json(v) for v in value]
    if isinstance(value, str):
        return redacted_text(value)
    return value


def redacted_letter(letter: DeadLetter) -> DeadLetter:
    """A dead letter as a default backup keeps it: secret headers dropped, secrets out of the
    payload (JSON or not, whole or a preview) and out of the reason."""
    # Any header name may carry a secret (`X-Auth`): only trace context keeps its value.
    headers = {
        k: redacted_text(v) if k.lower() in ("traceparent", "tracestate") else REDACTED
        for k, v in letter.headers.items()
        if not SECRET_KEY.search(k)
    }
    if letter.payload_encoding == "base64":  # not UTF-8: kept as text, secrets out
        text = base64.b64decode(letter.payload).decode("utf-8", errors="replace")
    else:
        text = letter.payload
    try:
        payload = json.dumps(redacted_json(json.loads(text)))
    except (ValueError, RecursionError):  # a preview of a big body, or not JSON at all
        payload = redacted_text(text)
    return letter.model_copy(
        update={
            "headers": headers,
            "payload": payload,
            "payload_encoding": "utf-8",
            "reason": redacted_text(letter.reason),
        }
    )


def redacted_entry(entry: LedgerEntry) -> LedgerEntry:
    """A ledger entry without secrets in its delivery targets and errors (URLs with tokens)."""
    try:
        return LedgerEntry.model_validate(redacted_json(entry.model_dump(mode="json")))
    except ValueError:  # a field redaction made invalid: its delivery targets and errors go
        return entry.model_copy(update={"channels": [], "error": REDACTED if entry.error else None})
