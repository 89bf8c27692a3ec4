"""Who may use the console: users and roles from the operator's users file (argon2 hashes),
or single sign-on (OpenID Connect); a login rate limit.

Roles, each including the one before: `viewer` reads; `author` (the studio's, issue #33)
reads; `ops` also replays, purges, re-delivers, pauses and runs, and sees request bodies and
delivery targets. Secrets are shown to nobody.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared.errors import PressroomError
from shared.settings import Settings

Role = Literal["viewer", "author", "ops"]
ROLES: tuple[Role, ...] = ("viewer", "author", "ops")
USERS_FILE = "console-users.yaml"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
_HASHER = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs what a wrong password does.


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify unknown names against (same cost as a real user: no timing oracle).
    Made on first use: an argon2 hash costs ~0.2 s of CPU, which every `pressroom` command
    paid at import when it was a module constant."""
    return _HASHER.hash("not a password anyone has")


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def users_file(settings: Settings) -> Path:
    return settings.console_users or Path(settings.data_dir) / USERS_FILE


def load_users(path: Path) -> dict[str, tuple[Role, str]]:
    """name -> (role, argon2 hash); no file: no users (the console lets nobody in)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PressroomError(f"cannot read the console users file {path}: {error}") from None
    users: dict[str, tuple[Role, str]] = {}
    for item in data.get("users") or []:
        if not isinstance(item, dict):
            continue
        name, role, hashed = item.get("name"), item.get("role"), item.get("password")
        if isinstance(name, str) and role in ROLES and isinstance(hashed, str | None):
            users[name] = (role, hashed or "")
    return users


def save_users(path: Path, users: dict[str, tuple[Role, str]]) -> None:
    """Written whole and renamed into place, readable by its owner only (it holds hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "users": [
            {"name": name, "role": role, "password": hashed}
            for name, (role, hashed) in sorted(users.items())
        ]
    }
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(body, handle, sort_keys=False)
    os.replace(tmp, path)


def add_user(path: Path, name: str, role: str, password: str) -> None:
    if not USER_NAME.match(name):
        raise PressroomError(f"user name '{name}' must be letters, digits and ._@+- (≤ 100)")
    if role not in ROLES:
        raise PressroomError(f"unknown role '{role}' (known: {', '.join(ROLES)})")
    if len(password) < 12:
        raise PressroomError("the password must be at least 12 characters")
    users = load_users(path)
    users[name] = (role, _HASHER.hash(password))  # type: ignore[assignment]
    save_users(path, users)


def remove_user(path: Path, name: str) -> None:
    users = load_users(path)
    if name not in users:
        raise PressroomError(f"no console user '{name}' in {path}")
    del users[name]
    save_users(path, users)


def check_password(path: Path, name: str, password: str) -> User | None:
    """The user when the password is theirs; None otherwise (same work either way)."""
    known = load_users(path).get(name)
    hashed = known[1] if known and known[1] else _dummy_hash()
    try:
        _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if known is None or not known[1]:
        return None
    return User(name, known[0])


def sso_user(path: Path, name: str) -> User | None:
    """A single-sign-on identity is let in only when the users file names it (its role)."""
    known = load_users(path).get(name)
    return User(name, known[0]) if known else None


class LoginLimiter:
    """At most `attempts` failed logins per `window` seconds, per client address and per
    user name (a guesser spreading over names or addresses meets one of the two)."""

    def __init__(self, attempts: int = 5, window: float = 300.0) -> None:
        self.attempts, self.window = attempts, window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        seen = self._failures.setdefault(key, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen

    def retry_after(self, address: str, name: str) -> int:
        """Seconds until a login may be tried again (0: now)."""
        now = time.monotonic()
        waits = [
            int(seen[0] + self.window - now) + 1
            for key in (f"a:{address}", f"u:{name}")
            if len(seen := self._recent(key, now)) >= self.attempts
        ]
        return max(waits, default=0)

    def failed(self, address: str, name: str) -> None:
        now = time.monotonic()
        for key in (f"a:{address}", f"u:{name}"):
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # never grows without bound under a spray
            self._failures.clear()
