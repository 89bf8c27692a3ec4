"""`pressroom` imports only what the command it runs needs (start-up time of every call)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from services.console.cli import COMMANDS, build, command_of
from tests.helpers import REPO, pressroom, run_probe

PROBE = """
import json, sys
sys.argv = ["pressroom", *sys.argv[1:]]
from services.console import cli
try:
    cli.main()
except SystemExit as done:
    assert done.code == 0, done.code
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_loaded(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80", "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def names(app: typer.Typer) -> set[str]:
    group = typer.main.get_group(app)
    return set(group.commands)


def test_every_command_is_in_the_table_and_brought_by_its_module() -> None:
    everything = names(build())
    assert everything == set(COMMANDS)
    for command, module in COMMANDS.items():
        assert command in names(build([module])), (command, module)


def test_a_bus_command_does_not_import_the_console_the_services_or_the_renderer() -> None:
    loaded = modules_loaded("status", "--help")
    assert "services.console.cli.requests" in loaded
    heavy = {
        "services.console.web.app",
        "uvicorn",
        "faststream",
        "weasyprint",
        "minio",
        "jinja2",
        "services.renderer.core",
        "services.fetcher.app",
        "aiohttp",  # nats-py's WebSocket transport (shared/startup.py)
        "urllib3",  # the S3 store's client
        "opentelemetry.sdk.metrics",  # a service's /metrics
    }
    assert not heavy & loaded, heavy & loaded


WORKER_PROBE = """
import asyncio, json, sys
sys.argv = ["pressroom", "worker", sys.argv[1]]
def started(app_run):  # the service is about to run: what has its process imported?
    app_run.close()
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
    raise SystemExit(0)
asyncio.run = started
from services.console import cli
cli.main()
"""


@pytest.mark.parametrize("service", ["fetcher", "renderer", "distributor", "scheduler"])
def test_a_worker_starts_without_the_clis_libraries(service: str) -> None:
    done = run_probe(WORKER_PROBE, service)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert f"services.{service}.app" in loaded
    cli_only = {"typer", "services.console.cli._common", "services.console.cli.stack"}
    cli_only |= {"services.console.requests", "services.console.supervisor"}
    # structlog loads Rich, attrs and Pygments unless hidden from it (shared/startup.py).
    cli_only |= {"rich", "attr", "pygments"}
    assert not cli_only & loaded, cli_only & loaded


def test_an_unknown_worker_is_one_line() -> None:
    done = pressroom("worker", "printer")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: unknown worker 'printer' (known: scheduler, fetcher, renderer, distributor)"
    )


def test_a_distributor_loads_a_channels_libraries_at_its_first_delivery_only() -> None:
    probe = (
        "import asyncio, sys\n"
        "from services.distributor.app import create_app\n"
        "from services.distributor.channels import default_channels\n"
        "from shared.settings import Settings\n"
        "create_app()\n"
        "assert not {'smtplib', 'httpx', 'minio'} & set(sys.modules), sys.modules.keys()\n"
        "async def fail_one():\n"  # email unconfigured: its module loads, and says so
        "    from shared.errors import PermanentError\n"
        "    from shared.events import Delivery\n"
        "    email = default_channels(Settings())['email']\n"
        "    try:\n"
        "        await email.deliver(Delivery(channel='email'), None)\n"
        "    except PermanentError as error:\n"
        "        return error.reason\n"
        "print(asyncio.run(fail_one()), 'smtplib' in sys.modules)\n"
    )
    done = run_probe(probe)
    assert done.stdout.strip() == (
        "email channel is not configured (set PRESSROOM_SMTP_HOST) True"
    ), done.stderr


def test_nats_still_finds_aiohttp_for_a_websocket_url() -> None:
    probe = (
        "import sys, shared, nats.aio.transport as transport\n"
        "assert 'aiohttp' not in sys.modules\n"
        "session = transport.aiohttp.ClientSession\n"  # what the WebSocket transport calls
        "import aiohttp\n"
        "assert session is aiohttp.ClientSession\n"
        "async def headers():\n"  # a ws:// connection with headers (nats.connect's ws_headers)
        "    ws = transport.WebSocketTransport(ws_headers={'X-Caller': ['pressroom']})\n"
        "    found = ws._get_custom_headers()\n"
        "    await ws._client.close()\n"
        "    return found\n"
        "import asyncio\n"
        "assert asyncio.run(headers())['X-Caller'] == 'pressroom'\n"
        "print('found')\n"
    )
    done = run_probe(probe)
    assert done.stdout.strip() == "found", done.stderr


def test_no_arguments_shows_the_help_without_an_empty_error_line() -> None:
    done = pressroom()
    assert "Commands" in done.stdout + done.stderr
    assert "error:" not in done.stdout + done.stderr
    assert done.returncode == 2  # Click's code for "no arguments: the help"


def test_help_before_a_command_lists_every_command() -> None:
    assert command_of(["status", "x", "--json"]) == "status"
    assert command_of(["--help", "status"]) is None
    assert command_of([]) is None
    shown = pressroom("--help", "dlq", env={"COLUMNS": "200"}).stdout
    for command in COMMANDS:
        assert f" {command} " in shown, command


@pytest.mark.parametrize("argv", [("worker", "fetcher"), ("config", "check")])
def test_a_config_file_that_does_not_parse_is_one_line(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    config = tmp_path / "pressroom.yaml"
    config.write_text("schedules:\n  - name: [unclosed\n")
    done = pressroom(*argv, env={"PRESSROOM_CONFIG": str(config)}, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: invalid configuration: PRESSROOM_CONFIG: "), lines
