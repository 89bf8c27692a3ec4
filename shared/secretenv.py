"""Which secrets a process may inherit: each gets only those its work needs.

Render processes run templates: no secret at all (deliveries, S3, the bus, signing keys).
A worker keeps its role's: only the distributor the SMTP and webhook secrets, only the fetcher
the source credentials, only the renderer the signing key, no scheduler the S3 keys.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

# Names that hold (or point at) a secret: passwords, keys, tokens, credentials, seeds.
SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|CREDS|NKEY|PRIVATE|ACCESS_KEY|API_KEY|_KEY$"
    r"|^AWS_|^PRESSROOM_NATS_URL$|^PRESSROOM_NATS_USER$|^PRESSROOM_SMTP_USER$"
    r"|^PRESSROOM_SIGN_|^PRESSROOM_OIDC_",
    re.IGNORECASE,
)

_DELIVERY = re.compile(r"^PRESSROOM_(SMTP_USER|SMTP_PASSWORD|WEBHOOK_SECRETS?(_FILE)?)$")
_SOURCES = re.compile(r"^PRESSROOM_SOURCE_CREDENTIALS$")
_STORE = re.compile(r"^(PRESSROOM_S3_(ACCESS|SECRET)_KEY|AWS_.*)$")
# The renderer's keys: signing, and the PDF owner password and password-unsealing key.
_SIGNING = re.compile(r"^PRESSROOM_(SIGN_|PDF_OWNER_PASSWORD(_FILE)?$|PDF_SEAL_KEY_FILE$)")
_CONSOLE = re.compile(r"^PRESSROOM_OIDC_")
# Signs download links: the console and the distributor (webhooks and emails carry links).
_LINKS = re.compile(r"^PRESSROOM_CONSOLE_SECRET$")

# What each worker may not see: the secrets of the other roles.
NOT_FOR: dict[str, tuple[re.Pattern[str], ...]] = {
    "fetcher": (_DELIVERY, _SIGNING, _CONSOLE, _LINKS),
    "renderer": (_DELIVERY, _SOURCES, _CONSOLE, _LINKS),
    "distributor": (_SOURCES, _SIGNING, _CONSOLE),
    "scheduler": (_DELIVERY, _SOURCES, _STORE, _SIGNING, _CONSOLE, _LINKS),
}


def is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def for_role(env: Mapping[str, str], role: str) -> dict[str, str]:
    """A worker's environment without the other roles' secrets."""
    denied = NOT_FOR.get(role, ())
    return {k: v for k, v in env.items() if not any(p.match(k) for p in denied)}


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not is_secret(k)}


def scrub(env: MutableMapping[str, str] | None = None, role: str | None = None) -> None:
    """Remove from `env` (this process's environment) every secret, or the other roles'."""
    target = os.environ if env is None else env
    kept = for_role(target, role) if role is not None else without_secrets(target)
    for name in [k for k in target if k not in kept]:
        del target[name]


# What a render process may not inherit, besides every secret-named variable: Pressroom's own
# settings (it reads none: a render's job carries what it needs, and a setting may hold a
# secret under any name — `PRESSROOM_SOURCES` with a header, `PRESSROOM_CONFIG` pointing at
# every role's secrets), connection strings and DSNs, exporters' headers, pointers to key
# files. Libraries' own settings pass (`SOFTHSM2_CONF` for a PKCS#11 signing token,
# `OPENSSL_CONF`, fontconfig's …), unless a value holds a URL with credentials.
_NOT_FOR_TEMPLATES = re.compile(
    r"^PRESSROOM_|DSN$|CONNECTION_?STRING|HEADERS$|_KEY_FILE$|_KEY_PATH$", re.IGNORECASE
)
_CREDENTIALLED_URL = re.compile(r"://[^/\s@]*@")


def for_templates(env: Mapping[str, str]) -> dict[str, str]:
    """What a render process may inherit: no secret-named variable, none of
    `_NOT_FOR_TEMPLATES`, and no value holding a URL with credentials in it."""
    return {
        k: v
        for k, v in env.items()
        if not is_secret(k)
        and not _NOT_FOR_TEMPLATES.search(k)
        and not _CREDENTIALLED_URL.search(v)
    }


def private_environment() -> bool:
    """Make this process's memory and environment unreadable to other processes of its user
    (Linux: not "dumpable"), so a render process — a child, running untrusted templates under
    the same user — cannot read `/proc/<parent>/environ` or its memory. Root (or a process with
    CAP_SYS_PTRACE) still can. False where that could not be done (not Linux, prctl refused)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_dumpable = 4
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(pr_set_dumpable, 0, 0, 0, 0) == 0)


@contextmanager
def only_environment(kept: Mapping[str, str]) -> Iterator[None]:
    """This process's environment reduced to `kept` while a child is started, then restored.

    A child started meanwhile never has the rest, not even in `/proc/<pid>/environ` (which
    keeps the environment a process was started with: removing a name inside the child does
    not clear it from there). Synchronous, so no other task of this event loop sees it; a
    thread reading a removed name meanwhile would miss it, and Pressroom's read theirs at start.
    """
    removed = {k: v for k, v in os.environ.items() if k not in kept}
    for name in removed:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(removed)
