"""The tests' `pressroom` commands forked from a zygote (tests/cliproc.py) give what a fresh
interpreter gives: the same output, errors and exit codes, each call with its own settings."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import cliproc
from tests.helpers import REPO, eventually


def fresh(
    args: list[str], env: dict[str, str], cwd: Path, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return cliproc.run(args, env=env, cwd=cwd, input=input, timeout=120, fork=False)


def base(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "PRESSROOM_TEMPLATES_DIR": str(REPO / "templates"),
        **extra,
    }


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--help"], {"COLUMNS": "80"}),
        (["status", "--help"], {"COLUMNS": "120"}),  # Rich's width, read when it starts
        (["nonsense"], {"COLUMNS": "80"}),  # a usage error: exit 2
        (["templates", "ls"], {"COLUMNS": "80"}),
        (["config", "check"], {"PRESSROOM_RETRY_BACKOFF": "soon"}),  # a settings error: exit 1
        (["ls"], {"PRESSROOM_NATS_URL": "nats://127.0.0.1:9"}),  # nothing listens there
    ],
)
def test_a_forked_command_answers_as_a_fresh_one(
    tmp_path: Path, args: list[str], extra: dict[str, str]
) -> None:
    env = base(tmp_path, **extra)
    forked = cliproc.run(args, env=env, cwd=tmp_path)
    assert forked.stdout or forked.stderr
    expected = fresh(args, env, tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        expected.returncode,
        expected.stdout,
        expected.stderr,
    )


def test_each_call_has_its_own_settings_folder_and_stdin(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    env = base(tmp_path, PRESSROOM_CONSOLE_USERS=str(users))
    add = ["console", "user", "add"]
    added = cliproc.run([*add, "ada", "--role", "ops"], env=env, cwd=tmp_path,
                        input="s3cret-passw0rd!\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "ada" in users.read_text() and "s3cret" not in users.read_text()
    # The next call, without that setting, does not see it: it writes where the default says.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = cliproc.run([*add, "bob", "--role", "viewer"], env=base(elsewhere), cwd=elsewhere,
                        input="an0ther-passw0rd!\n")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "bob" not in users.read_text()
    assert [p for p in elsewhere.rglob("*") if p.is_file() and "bob" in p.read_text()]


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    (tmp_path / "state" / "logs").mkdir(parents=True)
    env = base(tmp_path, PRESSROOM_DATA_DIR=str(tmp_path / "state"))
    with pytest.raises(subprocess.TimeoutExpired):  # `logs -f` follows until it is stopped
        cliproc.run(["logs", "-f"], env=env, cwd=tmp_path, timeout=1)

    async def gone() -> bool:  # no process left in the command's folder
        return not [pid for pid in os.listdir("/proc") if pid.isdigit() and _in(pid, tmp_path)]

    import asyncio

    assert asyncio.run(eventually(gone, timeout=30))


def _in(pid: str, folder: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == folder
    except OSError:
        return False


def test_a_long_running_command_is_used_as_a_popen_is(tmp_path: Path) -> None:
    (tmp_path / "state" / "logs").mkdir(parents=True)
    (tmp_path / "state" / "logs" / "fetcher-1.log").write_text('{"event": "hello"}\n')
    env = base(tmp_path, PRESSROOM_DATA_DIR=str(tmp_path / "state"), COLUMNS="80")
    with (tmp_path / "out.log").open("wb") as output:
        proc = cliproc.start(["logs", "-f"], env=env, cwd=tmp_path, output=output)

    async def printed() -> bool:
        return "hello" in (tmp_path / "out.log").read_text()

    import asyncio

    assert asyncio.run(eventually(printed, timeout=60))
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL == proc.poll() == proc.returncode
    proc.kill()  # ended: nothing is signalled, nothing raised


def test_the_zygote_refuses_a_request_without_streams_and_serves_the_next(tmp_path: Path) -> None:
    import socket

    env = base(tmp_path, COLUMNS="80")
    assert cliproc.run(["--help"], env=env).returncode == 0
    zygote = cliproc._zygote(cliproc.startup_env(env))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(zygote.path)
        conn.send(b'{"argv": ["--help"], "env": {}, "cwd": "/"}')  # no stdin, stdout, stderr
        assert conn.recv(64) == b""  # closed: nothing started
    assert "a request with 0 streams: not started" in Path(zygote.log).read_text()
    assert cliproc.run(["--help"], env=env).returncode == 0
