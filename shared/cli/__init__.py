"""The `pressroom` command: run the stack, request and render reports, inspect and repair."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from shared.cli._output import Col, print_table, shorten
from shared.errors import PressroomError
from shared.events import ReportRequested
from shared.settings import Settings

T = TypeVar("T")
app = typer.Typer(
    help="Pressroom: event-driven report pipeline (NATS JetStream · FastStream · WeasyPrint).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
templates_app = typer.Typer(help="List, validate and inspect templates.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
sources_app = typer.Typer(help="Configured data sources: list and test.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(templates_app, name="templates")
app.add_typer(dlq_app, name="dlq")

out = Console()
err = Console(stderr=True, soft_wrap=True)
SERVICES = ("scheduler", "fetcher", "renderer", "distributor")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async operation; Pressroom errors become one line and exit 1."""
    from nats.errors import Error as NatsError

    from shared.busauth import REFUSALS

    try:
        return asyncio.run(coro)
    except PressroomError as error:
        fail(error.reason)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (NatsError, TimeoutError) as error:
        # A refused request is never answered: name the refusal rather than "timeout".
        fail(REFUSALS.last() or f"NATS: {error or type(error).__name__}")


def settings() -> Settings:
    from shared.settings import load_settings

    try:
        return load_settings()
    except PressroomError as error:
        fail(error.reason)
    except Exception as error:  # a YAML file that does not parse
        first = " ".join(str(error).split())[:300]
        fail(f"invalid configuration: PRESSROOM_CONFIG: {first}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_params(params: list[str]) -> dict[str, Any]:
    """`k=v` pairs; values that parse as JSON (numbers, lists, true) keep their type."""
    result: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--param expects key=value, got '{item}'")
        try:
            result[key] = json.loads(value)
        except ValueError:
            result[key] = value
    return result


def load_data_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        fail(f"data file '{path}' not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as error:
        fail(f"cannot parse data file '{path}': {str(error).splitlines()[0]}")
    if not isinstance(data, dict):
        fail(f"data file '{path}' must hold an object at the top level")
    return data


# ---- running -----------------------------------------------------------------------------
@app.command()
def worker(
    name: str = typer.Argument(..., help="fetcher | renderer | distributor"),
) -> None:
    """Run one service process (what a container runs)."""
    factories: dict[str, Callable[[], Any]] = {
        "fetcher": lambda: __import__("services.fetcher.app", fromlist=["x"]).create_app(),
        "renderer": lambda: __import__("services.renderer.app", fromlist=["x"]).create_app(),
        "distributor": lambda: __import__("services.distributor.app", fromlist=["x"]).create_app(),
        "scheduler": lambda: __import__("services.scheduler.app", fromlist=["x"]).create_app(),
    }
    if name not in factories:
        fail(f"unknown worker '{name}' (known: {', '.join(factories)})")
    settings()
    try:
        faststream_app = factories[name]()
        asyncio.run(faststream_app.run())
    except KeyboardInterrupt:
        return
    except PressroomError as error:
        fail(f"{name}: {error.reason}")


def _parse_scale(scale: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(SERVICES, 1)
    for item in scale:
        name, _, number = item.partition("=")
        if name not in counts or not number.isdigit():
            fail(f"--scale expects SERVICE=N with SERVICE one of {', '.join(SERVICES)}: '{item}'")
        counts[name] = int(number)
    return counts


@app.command()
def up(
    scale: list[str] = typer.Option([], help="Replicas, e.g. --scale renderer=2"),
    sample: bool = typer.Option(False, help="Publish the bundled sample request once started."),
    prometheus: bool = typer.Option(
        False, "--prometheus", help="Also run Debian's prometheus with the shipped alert rules."
    ),
    prometheus_port: int = typer.Option(9090, help="Its port (taken: a free one)."),
) -> None:
    """Run the whole pipeline: an embedded nats-server (unless PRESSROOM_NATS_URL) and services."""
    from shared.embedded import DataDirInUse, lock_data_dir, start_nats_server

    cfg = settings()
    counts = _parse_scale(scale)
    try:
        lock = lock_data_dir(cfg.data_dir)  # held until this process ends
    except DataDirInUse as error:
        fail(str(error))
    nats_proc = None
    env = dict(os.environ)
    if cfg.embedded:
        from shared.busauth import embedded_auth_dir, generate

        # One identity per role, made on the first start and kept: the embedded bus is locked
        # like any other, and every process (and the CLI later) finds its own key here.
        auth_dir = embedded_auth_dir(cfg)
        generate(auth_dir)
        try:
            nats_proc = start_nats_server(cfg.data_dir, cfg.nats_port, auth=auth_dir / "auth.conf")
        except RuntimeError as error:
            fail(str(error))
        env["PRESSROOM_NATS_URL"] = cfg.bus_url
        env["PRESSROOM_NATS_CREDENTIALS_DIR"] = str(auth_dir.resolve())
    run(_prepare(cfg))
    log_dir = cfg.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    from shared.embedded import free_port

    registry: dict[str, str] = {}
    for name, count in counts.items():
        for index in range(count):
            label = f"{name}-{index + 1}"
            port = free_port()
            registry[label] = f"http://127.0.0.1:{port}"
            log = (log_dir / f"{label}.log").open("ab")
            proc = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "worker", name],
                env={**env, "PRESSROOM_HEALTH_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            children.append((label, proc))
    (cfg.data_dir / "workers.json").write_text(json.dumps(registry, indent=2))
    watcher = _watch(cfg, registry, prometheus_port if prometheus else None)
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    out.print(f"[bold]Pressroom[/] on {cfg.bus_url_public} · logs in {log_dir} · Ctrl-C to stop")
    counter = _OutcomeCounter(cfg)
    if sample:
        request_file = cfg.templates_dir / "samples" / "portfolio-request.json"
        rid = run(_publish_sample(cfg, request_file))
        out.print(f"published sample request [cyan]{rid}[/] → {cfg.out_dir.resolve()}/{rid}.pdf")
    with Live(console=out, refresh_per_second=2, transient=True) as live:
        while not stopping:
            alive = sum(1 for _, p in children if p.poll() is None)
            dead = [n for n, p in children if p.poll() is not None]
            live.update(
                f"[green]{alive}/{len(children)} services up[/] · "
                f"{counter.line()}" + (f" · [red]exited: {', '.join(dead)}[/]" if dead else "")
            )
            time.sleep(0.5)
    out.print("stopping …")
    counter.close()
    for _, proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for _, proc in children:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
    if watcher is not None:
        watcher.stop()
    (cfg.data_dir / "prometheus" / "targets.json").unlink(missing_ok=True)
    if nats_proc is not None:
        nats_proc.terminate()
        try:
            nats_proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            nats_proc.kill()
    (cfg.data_dir / "workers.json").unlink(missing_ok=True)
    lock.close()
    out.print("stopped.")


def _watch(cfg: Settings, registry: dict[str, str], port: int | None) -> Any:
    """targets.json for any Prometheus; with --prometheus, the embedded one (or why not)."""
    from shared.embedded import free_port, port_open
    from shared.monitoring import MonitoringUnavailable, start_prometheus, write_targets

    folder = cfg.data_dir / "prometheus"
    write_targets(folder, registry)
    if port is None:
        return None
    port = free_port() if port_open("127.0.0.1", port) else port
    try:
        embedded = start_prometheus(folder, port)
    except MonitoringUnavailable as error:
        err.print(f"[yellow]note:[/] {error.reason}", highlight=False)
        return None
    out.print(f"Prometheus on [cyan]{embedded.url}[/] · `pressroom alerts` shows what fires")
    return embedded


class _OutcomeCounter:
    """Counts report.delivered / report.failed for the live status line (best effort)."""

    def __init__(self, cfg: Settings) -> None:
        import threading

        self.delivered = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cfg,), daemon=True)
        self._thread.start()

    def _run(self, cfg: Settings) -> None:
        async def main() -> None:
            from shared.bus import connect

            async def quiet(error: Exception) -> None:
                """Services log the bus's troubles; the status line stays clean."""

            nc = await connect(cfg, name="pressroom-up", error_cb=quiet)

            async def delivered(msg: Any) -> None:
                self.delivered += 1

            async def failed(msg: Any) -> None:
                self.failed += 1

            await nc.subscribe("report.delivered", cb=delivered)
            await nc.subscribe("report.failed", cb=failed)
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
            await nc.close()

        try:
            asyncio.run(main())
        except Exception:  # the status line is cosmetic; never take `up` down with it
            return

    def line(self) -> str:
        return f"delivered {self.delivered} · failed {self.failed}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


async def _prepare(cfg: Settings) -> None:
    from shared.ops import open_bus

    async with open_bus(cfg):
        pass


async def _publish_sample(cfg: Settings, path: Path) -> str:
    from shared.ops import open_bus, publish_request

    request = ReportRequested.model_validate_json(path.read_text())
    # A new id each run: the request_id is an idempotency key, and each run should deliver.
    stamp = time.strftime("%Y%m%dT%H%M%S")
    request = request.model_copy(update={"request_id": f"{request.request_id}-{stamp}"})
    async with open_bus(cfg, setup=False) as bus:
        await publish_request(bus, request)
    return request.request_id


# ---- requests ----------------------------------------------------------------------------
@app.command()
def request(
    file: Path | None = typer.Argument(None, help="A report.requested JSON file."),
    template: str | None = typer.Option(None, "--template", "-t"),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value, repeatable"),
    data_file: Path | None = typer.Option(None, "--data-file", help="JSON/YAML params"),
    fmt: list[str] = typer.Option([], "--format", "-f", help="pdf and/or html"),
    request_id: str | None = typer.Option(None, "--request-id"),
    to_folder: str | None = typer.Option(None, "--to-folder", help="file delivery folder"),
    email: list[str] = typer.Option([], "--email", help="email delivery recipient"),
    locale: str | None = typer.Option(None, "--locale", help="e.g. de-DE, ja: numbers, dates"),
    split: str | None = typer.Option(
        None, "--split", help="auto | on | off: lay a long report out in several processes"
    ),
    validate: bool = typer.Option(False, "--validate", help="Only check the payload."),
    wait: bool = typer.Option(False, "--wait", help="Wait for delivery or failure."),
    timeout: float = typer.Option(120.0, help="Seconds to wait with --wait."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Publish a report.requested (from a JSON file or flags); optionally wait for the outcome."""
    from pydantic import ValidationError

    body: dict[str, Any] = {}
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except (OSError, ValueError) as error:
            fail(f"cannot read request file '{file}': {error}")
    params = {**body.get("params", {})}
    if data_file:
        params.update(load_data_file(data_file))
    params.update(parse_params(param))
    body["params"] = params
    if template:
        body["template"] = template
    if fmt:
        body["formats"] = fmt
    if request_id:
        body["request_id"] = request_id
    if locale:
        body["locale"] = locale
    if split:
        body["split"] = split
    deliver = list(body.get("deliver", []))
    if to_folder:
        deliver.append({"channel": "file", "path": to_folder})
    if email:
        deliver.append({"channel": "email", "to": email})
    if deliver:
        body["deliver"] = deliver
    body.setdefault("requested_by", f"cli:{os.environ.get('USER', 'unknown')}")
    try:
        req = ReportRequested.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in error.errors()
        )
        fail(f"invalid request: {problems}")
    cfg = settings()
    _check_template(cfg, req.template)
    if validate:
        if as_json:
            emit_json({"valid": True, "request": json.loads(req.model_dump_json())})
        else:
            out.print(f"valid report.requested for template '{req.template}'")
        return
    outcome = run(_request(cfg, req, wait, timeout))
    if as_json:
        emit_json({"request_id": req.request_id, **({"outcome": outcome} if wait else {})})
    elif not wait:
        out.print(f"published [cyan]{req.request_id}[/]")
    if wait and outcome is not None:
        if outcome["subject"] == "report.delivered":
            if not as_json:
                out.print(f"[green]delivered[/] {req.request_id}")
                for ch in outcome["payload"].get("channels", []):
                    out.print(f"  {ch['channel']}: {ch['target']}")
        else:
            reason = outcome["payload"].get("reason")
            if not as_json:
                err.print(f"[red]failed[/] {req.request_id}: {reason}", highlight=False)
            raise typer.Exit(1)


async def _request(
    cfg: Settings,
    req: ReportRequested,
    wait: bool,
    timeout: float,
    schedule: Any = None,
) -> dict[str, Any] | None:
    from shared.ops import open_bus, publish_and_wait, publish_request

    async def publish(bus: Any) -> None:
        if schedule is None:
            await publish_request(bus, req)
        else:  # exactly as the scheduler fires it, so the fetcher knows it for the schedule's
            from services.scheduler.app import fire
            from shared.bus import JetStreamPublisher

            await fire(JetStreamPublisher(bus.js), schedule, req.requested_at, bus.js)

    # No topology set-up: a publisher identity may only publish and hear outcomes.
    async with open_bus(cfg, setup=False) as bus:
        if not wait:
            await publish(bus)
            return None
        with _progress(req.request_id, "published") as show:
            outcome = await publish_and_wait(bus, req, publish, timeout, show)
        return {"subject": outcome.subject, "payload": outcome.payload}


@contextmanager
def _progress(subject: str, first: str, *, tick: bool = False) -> Iterator[Callable[[str], None]]:
    """On a terminal, a Rich status line: what `subject` is doing and for how long (`tick`:
    the elapsed time counts up by itself while the caller blocks). Elsewhere (pipes, CI logs)
    nothing: the output stays what scripts parse."""
    if not err.is_terminal:
        yield lambda text: None
        return
    import threading

    started, doing, done = time.monotonic(), [first], threading.Event()
    with err.status(f"{subject}: {first}") as status:

        def show(text: str) -> None:
            doing[0] = text
            status.update(f"{subject}: {text} · {time.monotonic() - started:.0f}s")

        def ticker() -> None:
            while not done.wait(1):
                show(doing[0])

        clock = threading.Thread(target=ticker, daemon=True)
        if tick:
            clock.start()
        try:
            yield show
        finally:
            done.set()


def _check_template(cfg: Settings, name: str) -> None:
    """Refuse, before publishing, a template the renderer will not find — when this machine
    sees the templates folder; when it does not (a remote stack), the renderer decides."""
    if not cfg.templates_dir.is_dir():
        return
    from services.renderer.templating import TemplateLibrary

    try:
        TemplateLibrary(cfg.templates_dir).resolve(name)
    except PressroomError as error:
        fail(f"{error.reason} in {cfg.templates_dir}; nothing was published")


# ---- ad-hoc rendering --------------------------------------------------------------------
def _resolve_template(cfg: Settings, template: str) -> tuple[Path, str]:
    """A path renders from its own folder; a name renders from PRESSROOM_TEMPLATES_DIR."""
    as_path = Path(template)
    if as_path.is_file():
        return as_path.parent.resolve(), as_path.name
    return cfg.templates_dir.resolve(), template


@app.command()
def render(
    template: str = typer.Option(..., "--template", "-t", help="Template name or path"),
    data_file: Path | None = typer.Option(None, "--data-file", help="JSON or YAML data"),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value, overrides the file"),
    output: Path | None = typer.Option(None, "--output", "-o"),
    fmt: str | None = typer.Option(None, "--format", "-f", help="pdf or html"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and render, write nothing."),
    locale: str | None = typer.Option(None, "--locale", help="e.g. de-DE, ja: numbers, dates"),
    split: str | None = typer.Option(
        None, "--split", help="auto | on | off: lay a long report out in several processes"
    ),
) -> None:
    """Render a template without the bus (the legacy generate_report.py)."""
    from dataclasses import replace

    from services.renderer.core import build_context, make_job
    from services.renderer.split import render_capped

    cfg = settings()
    if output is None and not dry_run:
        fail("--output is required (or use --dry-run)")
    chosen = fmt or (output.suffix.lstrip(".") if output and output.suffix else "pdf")
    if chosen not in ("pdf", "html"):
        fail(f"--format must be pdf or html, got '{chosen}'")
    folder, name = _resolve_template(cfg, template)
    data = load_data_file(data_file) if data_file else {}
    data.update(parse_params(param))
    request_id = f"adhoc-{int(time.time())}"
    try:
        req = ReportRequested(template=name, request_id=request_id, requested_by="cli")
    except Exception as error:
        fail(f"invalid template name '{name}': {error}")
    if locale:
        try:
            req = req.model_copy(update={"locale": ReportRequested.checked_locale(locale)})
        except ValueError as error:
            fail(str(error))
    if split not in (None, "auto", "on", "off"):
        fail(f"--split must be auto, on or off, got '{split}'")
    formats = ("html",) if dry_run or chosen == "html" else ("pdf",)
    job = make_job(cfg, name, build_context(req, data), formats, templates_dir=folder, split=split)
    # A template given as a path is the operator's own file; a name must be a listed template.
    job = replace(job, listed_only=folder == cfg.templates_dir.resolve())
    try:
        # Long reports are split over PRESSROOM_RENDER_WORKERS processes, as in the renderer.
        with _progress(name, "rendering", tick=True):
            result = render_capped(job, cfg)
    except PressroomError as error:
        fail(error.reason)
    for notice in result.notices:
        err.print(f"[yellow]warning:[/] {notice}", highlight=False, soft_wrap=True)
    if dry_run:
        out.print(f"ok: '{name}' renders ({len(result.html):,} bytes of HTML); nothing written")
        return
    assert output is not None
    content = result.pdf if chosen == "pdf" else result.html
    assert content is not None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(content)
    extra = f", {result.pages} page(s)" if chosen == "pdf" else ""
    out.print(f"wrote {output} ({len(content):,} bytes{extra})")


@app.command("fonts")
def fonts_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """The font families the renderer uses and the scripts each covers."""
    from services.renderer import fonts

    cfg = settings()
    extra = fonts.extra_dirs_from(cfg.fonts_dir)
    found = fonts.families(extra)
    fast = fonts.harfbuzz_subset_available()
    if as_json:
        emit_json(
            {
                "families": [f.as_dict() for f in found],
                "font_dirs": [str(d) for d in fonts.font_dirs(extra)],
                "missing_glyphs": cfg.missing_glyphs,
                "subsetter": "harfbuzz" if fast else "fonttools",
            }
        )
        return
    table = Table("family", "styles", "scripts", "from")
    for f in found:
        table.add_row(
            f.name,
            _first(sorted(f.styles), 3),
            _first(f.scripts, 5),
            {"PRESSROOM_FONTS_DIR": "yours"}.get(f.source, f.source),
        )
    out.print(table)
    out.print(f"a character no font has: {cfg.missing_glyphs} (PRESSROOM_MISSING_GLYPHS)")
    if not fast:
        err.print(
            "[yellow]warning:[/] HarfBuzz-Subset is not installed (Debian: libharfbuzz-subset0): "
            "renders take ~4x the CPU, 10-25 s more with Chinese, Japanese or Korean text",
            highlight=False,
        )


# ---- templates ---------------------------------------------------------------------------
def _library(cfg: Settings, folder: Path | None = None) -> Any:
    from services.renderer.templating import TemplateLibrary

    root = folder or cfg.templates_dir
    if not root.is_dir():
        fail(f"templates folder '{root}' does not exist (set PRESSROOM_TEMPLATES_DIR)")
    return TemplateLibrary(root)


@templates_app.command("ls")
def templates_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Templates with their descriptions."""
    lib = _library(settings())
    infos = [lib.info(n) for n in lib.names()]
    if as_json:
        emit_json(
            [
                {"name": i.name, "description": i.description, "version": lib.version(i.name)}
                for i in infos
            ]
        )
        return
    print_table(
        out,
        [Col("template"), Col("version"), Col("description", long=True)],
        [[i.name, lib.version(i.name), i.description] for i in infos],
    )


@templates_app.command("validate")
def templates_validate(
    name: str | None = typer.Argument(None),
    all_: bool = typer.Option(False, "--all"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check syntax, filters and declared variables; exit 1 on any problem."""
    cfg = settings()
    if not name and not all_:
        fail("give a template NAME or --all")
    if name and Path(name).is_file():
        folder, name = _resolve_template(cfg, name)
        lib = _library(cfg, folder)
    else:
        lib = _library(cfg)
    found = _validate_capped(cfg, lib.folder, None if all_ else [str(name)])
    names, problems = list(found), [p for ps in found.values() for p in ps]
    warnings = _font_warnings(cfg, lib, [n for n in names if n and n in lib.names()])
    if as_json:
        emit_json({"checked": names, "problems": [str(p) for p in problems], "warnings": warnings})
    else:
        for problem in problems:
            err.print(str(problem), highlight=False, soft_wrap=True)
        for warning in warnings:
            err.print(f"warning: {warning}", highlight=False, soft_wrap=True)
        if not problems:
            out.print(f"ok: {len(names)} template(s) valid")
    if problems:
        raise typer.Exit(1)


def _first(items: list[str], n: int) -> str:
    return ", ".join(items[:n]) + (f" +{len(items) - n}" if len(items) > n else "")


def _font_warnings(cfg: Settings, lib: Any, names: list[str]) -> list[str]:
    """Families a template names that the renderer does not have (a warning, not a problem)."""
    from services.renderer import fonts

    return fonts.template_font_warnings(lib, names, fonts.extra_dirs_from(cfg.fonts_dir))


@templates_app.command("vars")
def templates_vars(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The variables a template reads (and what its header says about them)."""
    cfg = settings()
    folder, name = _resolve_template(cfg, name)
    lib = _library(cfg, folder)
    from services.renderer.pdf import run_capped
    from services.renderer.templating import variables_in_folder

    try:
        name = lib.check_name(name)
        variables, params = run_capped(
            variables_in_folder, str(lib.folder), name, label=name, settings=cfg
        )
    except PressroomError as error:
        fail(error.reason)
    if as_json:
        emit_json({"template": name, "variables": variables, "params": params})
        return
    print_table(
        out,
        [Col("variable"), Col("description", long=True)],
        [[var, params.get(var, "")] for var in variables],
    )


def _validate_capped(cfg: Settings, folder: Path, names: list[str] | None) -> Any:
    from services.renderer.pdf import run_capped
    from services.renderer.templating import validate_in_folder

    try:
        return run_capped(validate_in_folder, str(folder), names, label="validation", settings=cfg)
    except PressroomError as error:
        fail(error.reason)


# ---- schedules ---------------------------------------------------------------------------
schedule_app = typer.Typer(help="Cron schedules from the config file.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


def _schedules(cfg: Settings) -> Any:
    from services.scheduler.cron import load_schedules

    try:
        return load_schedules(cfg.schedules)
    except PressroomError as error:
        fail(error.reason)


@schedule_app.command("ls")
def schedule_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Schedules with their next fire times."""
    from datetime import UTC, datetime

    cfg = settings()
    now = datetime.now(UTC)
    rows = [
        {
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "enabled": s.enabled,
            "template": s.request.get("template"),
            "next_fire": s.next_fire(now).isoformat(),
        }
        for s in _schedules(cfg)
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"no schedules: {_config_says(cfg, 'schedules')}")
        return
    columns = [Col("name"), Col("cron"), Col("timezone"), Col("template")]
    print_table(
        out,
        [*columns, Col("next fire (UTC)")],
        [
            [
                row["name"],
                row["cron"],
                row["timezone"],
                str(row["template"]),
                row["next_fire"][:16] if row["enabled"] else "disabled",
            ]
            for row in rows
        ],
    )


@schedule_app.command("run")
def schedule_run(
    name: str, wait: bool = typer.Option(False, "--wait"), timeout: float = typer.Option(120.0)
) -> None:
    """Fire a schedule now (its request_id carries the current minute)."""
    from datetime import UTC, datetime

    cfg = settings()
    matches = [s for s in _schedules(cfg) if s.name == name]
    if not matches:
        fail(f"no schedule '{name}' in the config file")
    request = matches[0].request_for(datetime.now(UTC).replace(second=0, microsecond=0))
    outcome = run(_request(cfg, request, wait, timeout, schedule=matches[0]))
    out.print(f"fired {name} as [cyan]{request.request_id}[/]")
    if outcome is not None and outcome["subject"] != "report.delivered":
        fail(f"{request.request_id}: {outcome['payload'].get('reason')}")


# ---- data sources ------------------------------------------------------------------------
def _config_says(cfg: Settings, section: str) -> str:
    """Why a section of the config file is empty."""
    if cfg.config is None:
        return "PRESSROOM_CONFIG is not set (point it at a YAML file, e.g. deploy/pressroom.yaml)"
    return f"the config file {cfg.config} lists no {section}"


@sources_app.command("ls")
def sources_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Data sources named in the config file."""
    cfg = settings()
    rows = [{"name": n, "kind": s.get("kind", "?")} for n, s in sorted(cfg.sources.items())]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"no data sources: {_config_says(cfg, 'sources')}")
        return
    print_table(out, [Col("name"), Col("kind")], [[r["name"], r["kind"]] for r in rows])


@sources_app.command("test")
def sources_test(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Fetch one configured source now and show what came back (the legacy test_data_source)."""
    from shared.events import Source

    cfg = settings()
    if name not in cfg.sources:
        known = ", ".join(sorted(cfg.sources)) or "none configured"
        fail(f"no source '{name}' in the config file (known: {known})")
    # Fetched exactly as a request naming it (`source: NAME`) would: the operator's, trusted.
    source = Source(name=re.sub(r"\W", "_", name), source=name)
    started = time.monotonic()
    data = run(_fetch_one(cfg, source))
    seconds = time.monotonic() - started
    size = len(json.dumps(data, default=str))
    summary = {
        "source": name,
        "kind": cfg.sources[name].get("kind", "?"),
        "seconds": round(seconds, 3),
        "bytes": size,
        "items": len(data) if isinstance(data, list | dict) else None,
    }
    if as_json:
        emit_json({**summary, "data": data})
        return
    out.print(
        f"ok: {name} ({summary['kind']}) answered in {seconds:.2f}s, {size:,} bytes"
        + (f", {summary['items']} items" if summary["items"] is not None else "")
    )


async def _fetch_one(cfg: Settings, source: Any) -> Any:
    from services.fetcher.core import gather_context
    from services.fetcher.sources import default_sources

    request = ReportRequested(template="sources-test.html", sources=[source])
    context = await gather_context(request, default_sources(), cfg)
    return context[source.name]


# ---- health ------------------------------------------------------------------------------
@app.command()
def health(
    url: list[str] = typer.Option([], "--url", help="A worker's health URL (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The whole stack: NATS, streams and consumers, dead letters, store, and each worker."""
    cfg = settings()
    registry_file = cfg.data_dir / "workers.json"
    workers: dict[str, str] = {}
    if registry_file.is_file():
        workers.update(json.loads(registry_file.read_text()))
    workers.update({u: u for u in url})
    report = run(_health(cfg, workers))
    if as_json:
        emit_json(report)
    else:
        colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}
        out.print(f"[bold {colour[report['status']]}]{report['status']}[/]")
        print_table(
            out,
            [Col("component"), Col("status"), Col("detail", long=True)],
            [
                [name, f"[{colour[item['status']]}]{item['status']}[/]", item["detail"]]
                for name, item in report["components"].items()
            ],
        )
    if report["status"] == "unhealthy":
        raise typer.Exit(1)


async def _health(cfg: Settings, workers: dict[str, str]) -> dict[str, Any]:
    import httpx

    from shared.bus import DLQ_STREAM, STAGES, STREAM
    from shared.cluster import cluster_components
    from shared.health import _RANK
    from shared.ops import BusUnavailable, open_bus

    components: dict[str, dict[str, Any]] = {}
    try:
        async with open_bus(cfg, setup=False) as bus:
            info = await bus.js.stream_info(STREAM)
            components["nats"] = {
                "status": "healthy",
                "detail": f"{cfg.bus_url_public}, {info.state.messages} events stored",
            }
            for stage in STAGES.values():
                consumer = await bus.js.consumer_info(STREAM, stage.durable)
                pending = int(consumer.num_pending or 0)
                waiting = int(consumer.num_waiting or 0)
                status = "healthy" if waiting else "unhealthy"
                if waiting and pending > cfg.health_max_pending:
                    status = "degraded"
                components[f"consumer {stage.durable}"] = {
                    "status": status,
                    "detail": f"{pending} waiting, {consumer.num_ack_pending} in progress, "
                    f"{waiting} worker pull(s)" + ("" if waiting else " — no worker is running"),
                }
            dlq = await bus.js.stream_info(DLQ_STREAM)
            count = int(dlq.state.messages)
            components["dead letters"] = {
                "status": "degraded" if count else "healthy",
                "detail": f"{count} waiting (pressroom dlq ls)" if count else "none",
            }
            try:
                store = await bus.store()
                await asyncio.wait_for(store.check(), 5)
                components["artefact store"] = {"status": "healthy", "detail": type(store).__name__}
            except Exception as error:
                components["artefact store"] = {"status": "unhealthy", "detail": str(error)}
    except BusUnavailable as error:
        components["nats"] = {"status": "unhealthy", "detail": error.reason}
    except Exception as error:
        components["nats"] = {"status": "unhealthy", "detail": f"{type(error).__name__}: {error}"}
    components.update(await cluster_components(cfg))  # servers, stream and bucket leaders
    if components["nats"]["status"] == "unhealthy" and workers:
        # Workers answering /readyz serve some bus, not the one we cannot reach: listing them
        # as healthy would say the stack works when the CLI is pointed at the wrong place.
        components["workers"] = {
            "status": "unhealthy",
            "detail": f"not checked ({', '.join(workers)}): the bus at {cfg.bus_url_public} "
            "is unreachable from here",
        }
        workers = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for name, base in workers.items():
            try:
                response = await client.get(base.rstrip("/") + "/readyz")
                body = response.json()
                failing = [
                    k for k, v in body.get("checks", {}).items() if v.get("status") != "healthy"
                ]
                components[f"worker {name}"] = {
                    "status": body.get("status", "unhealthy"),
                    "detail": ", ".join(f"{k}: {body['checks'][k]['detail']}" for k in failing)
                    or "all checks pass",
                }
            except (httpx.HTTPError, ValueError) as error:
                components[f"worker {name}"] = {
                    "status": "unhealthy",
                    "detail": f"no answer from {base}: {error}",
                }
    worst = max((c["status"] for c in components.values()), key=lambda s: _RANK[s])
    return {"status": worst, "components": components}


# ---- inspection --------------------------------------------------------------------------
@app.command()
def status(request_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """What happened to one request: stages, timings, artefacts, channels, error."""
    from shared.ledger import entry_as_dict

    entry = run(_get_entry(settings(), request_id))
    if entry is None:
        fail(f"no request '{request_id}' in the ledger")
    data = entry_as_dict(entry)
    if as_json:
        emit_json(data)
        return
    out.print(f"[bold]{request_id}[/] · {entry.status} · template {entry.template}")
    for stage, rec in entry.stages.items():
        secs = f"{rec.seconds:.2f}s" if rec.seconds is not None else "—"
        out.print(f"  {stage:12} {rec.state:8} {secs:>8}  attempts {rec.attempts}")
        if rec.error and rec.error != entry.error:  # the request's own error follows below
            out.print(f"    {rec.error}", highlight=False, markup=False)
    for art in entry.artefacts:
        out.print(f"  artefact {art.format}: {art.key} ({art.size:,} bytes)")
    for ch in entry.channels:
        out.print(f"  {ch.channel}: {'ok' if ch.ok else 'FAILED'} {ch.target} {ch.detail}")
    if entry.error:
        out.print(f"  [red]error[/]: {entry.error}")


async def _get_entry(cfg: Settings, request_id: str) -> Any:
    from shared.ops import open_bus

    async with open_bus(cfg) as bus:
        return await (await bus.ledger()).get(request_id)


@app.command("ls")
def list_requests(
    limit: int = typer.Option(20, help="How many, newest first."),
    status_: str | None = typer.Option(None, "--status"),
    template: str | None = typer.Option(None, "--template"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent requests from the ledger."""
    entries = run(_entries(settings()))
    entries = [
        e
        for e in entries
        if (not status_ or e.status == status_) and (not template or e.template == template)
    ][:limit]
    if as_json:
        from shared.ledger import entry_as_dict

        emit_json([entry_as_dict(e) for e in entries])
        return
    if not entries:
        filters = [f"--{k} {v}" for k, v in (("status", status_), ("template", template)) if v]
        out.print(f"no requests match {' '.join(filters)}" if filters else "no requests yet")
        return
    columns = [Col("request_id"), Col("status"), Col("template"), Col("updated")]
    columns += [Col("total s", justify="right"), Col("error", long=True)]
    print_table(
        out,
        columns,
        [
            [
                e.request_id,
                e.status,
                e.template or "",
                e.updated_at.strftime("%F %T"),
                f"{e.total_seconds:.2f}" if e.total_seconds is not None else "",
                shorten(e.error or "", 160),
            ]
            for e in entries
        ],
    )


async def _entries(cfg: Settings) -> Any:
    from shared.ops import ledger_entries, open_bus

    async with open_bus(cfg) as bus:
        return await ledger_entries(bus)


def _window(text: str, option: str = "--window") -> Any:
    from datetime import timedelta

    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[-1:] not in units or not text[:-1].isdigit():
        fail(f"{option} expects an age like 24h, 7d or 4w, got '{text}'")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


@app.command("stats")
def stats_cmd(
    window: str = typer.Option("7d", help="How far back: 24h, 7d, 4w …"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Success rate, latency percentiles per stage, template usage, report sizes."""
    from shared.slo import in_window, stats

    entries = in_window(run(_entries(settings())), _window(window))
    data = stats(entries)
    if as_json:
        emit_json({"window": window, **data})
        return

    def fmt(value: Any, unit: str = "s") -> str:
        return "—" if value is None else f"{value:.2f}{unit}"

    out.print(
        f"[bold]{data['total']}[/] requests in {window}: {data['delivered']} delivered, "
        f"{data['failed']} failed, {data['in_flight']} in flight · success rate "
        f"{fmt(data['success_rate'], '%')}"
    )
    table = Table("latency", "p50", "p95", "p99")
    rows = [("end to end", data["end_to_end_seconds"])]
    rows += [(stage, pcts) for stage, pcts in data["stage_seconds"].items()]
    rows += [("data aggregation", data["fetch_seconds"]), ("render", data["render_seconds"])]
    for label, pcts in rows:
        table.add_row(label, fmt(pcts["p50"]), fmt(pcts["p95"]), fmt(pcts["p99"]))
    out.print(table)
    sizes = data["report_bytes"]
    out.print(
        "report size p50/p95: "
        + " / ".join(
            "—" if v is None else f"{v / 1024:.0f} KiB" for v in (sizes["p50"], sizes["p95"])
        )
    )
    out.print("templates: " + ", ".join(f"{k} ({v})" for k, v in data["templates"].items()))
    if data["cache_hit_rate"] is not None:
        out.print(f"fetch cache hit rate: {data['cache_hit_rate']:.1f}%")


@app.command()
def slo(
    window: str = typer.Option("30d", help="How far back: 24h, 7d, 30d …"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Each SLI of the legacy runbook against its target (exit 1 when any is missed)."""
    from shared.slo import in_window, objectives

    cfg = settings()
    entries = in_window(run(_entries(cfg)), _window(window))
    lib = _library(cfg)
    names = lib.names()
    valid = sum(1 for problems in _validate_capped(cfg, lib.folder, None).values() if not problems)
    rows = objectives(
        entries, templates_valid=(valid, len(names)), on_time_seconds=cfg.schedule_on_time
    )
    if as_json:
        emit_json({"window": window, "objectives": [r.as_dict() for r in rows]})
    else:
        table = Table("SLI", "target", "measured", "samples", "")
        for r in rows:
            value = "—" if r.value is None else f"{r.value:.2f} {r.unit}"
            mark = {True: "[green]met[/]", False: "[red]MISSED[/]", None: "[dim]no data[/]"}[r.met]
            table.add_row(r.name, r.target, value, str(r.measured_over), mark)
        out.print(table)
    if any(r.met is False for r in rows):
        raise typer.Exit(1)


@app.command()
def alerts(
    prometheus: str | None = typer.Option(
        None, "--prometheus", help="Prometheus URL (default: PRESSROOM_MONITOR_URL, or up's)"
    ),
    pending: bool = typer.Option(False, "--pending", help="Also alerts still waiting on `for:`."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What is firing, most severe first, with the command to start with (exit 1 if any)."""
    from shared.monitoring import active_alerts, monitor_url

    cfg = settings()
    try:
        url = monitor_url(prometheus, cfg.monitor_url, cfg.data_dir)
    except PressroomError as error:
        fail(error.reason)
    found = run(active_alerts(url, include_pending=pending))
    if as_json:
        emit_json({"prometheus": url, "alerts": [a.as_dict() for a in found]})
    elif not found:
        out.print(f"[green]nothing firing[/] ({url})")
    import textwrap

    def block(text: str) -> str:
        return textwrap.fill(
            text, max(out.width, 40), initial_indent="    ", subsequent_indent="    "
        )

    for alert in [] if as_json else found:
        state = "" if alert.state == "firing" else f" ({alert.state})"
        out.print(f"[bold red]{alert.severity}[/] [bold]{alert.name}[/]{state}")
        labels = " ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        for line in filter(None, (labels, alert.summary, f"start with: {alert.command}")):
            out.print(block(line), highlight=False, markup=False)
        out.print(block(f"runbook: {alert.runbook}"), highlight=False, markup=False)
    if any(a.state == "firing" for a in found):
        raise typer.Exit(1)


@app.command()
def clean(
    older_than: str | None = typer.Option(None, help="Age like 30d (default: retention setting)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go, delete nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove artefacts older than the retention age (PRESSROOM_ARTEFACT_RETENTION_DAYS)."""
    from datetime import timedelta

    cfg = settings()
    age = _window(older_than) if older_than else timedelta(days=cfg.artefact_retention_days)
    removed = run(_clean(cfg, age, dry_run))
    if as_json:
        emit_json(
            {"dry_run": dry_run, "objects": [{"key": o.key, "size": o.size} for o in removed]}
        )
        return
    verb = "would remove" if dry_run else "removed"
    total = sum(o.size for o in removed)
    out.print(f"{verb} {len(removed)} object(s), {total / 1024 / 1024:.1f} MiB")


async def _clean(cfg: Settings, age: Any, dry_run: bool) -> Any:
    from shared.ops import open_bus
    from shared.store import remove_older_than

    async with open_bus(cfg) as bus:
        return await remove_older_than(await bus.store(), age, dry_run=dry_run)


@app.command()
def get(
    request_id: str,
    output: Path | None = typer.Option(None, "--output", "-o"),
    fmt: str = typer.Option("pdf", "--format", "-f"),
    url: bool = typer.Option(False, "--url", help="Print a download link (S3) instead."),
    expires: str = typer.Option("24h", help="How long the --url link works (at most 7d)."),
) -> None:
    """Download a rendered artefact (checked against its recorded sha256), or link to it."""
    cfg = settings()
    if url:
        link = run(_artefact_url(cfg, request_id, fmt, _window(expires, option="--expires")))
        sys.stdout.write(link + "\n")
        return
    if output is None:
        fail("give --output FILE (or --url for a download link)")
    size = run(_download(cfg, request_id, fmt, output))
    out.print(f"wrote {output} ({size:,} bytes)")


async def _download(cfg: Settings, request_id: str, fmt: str, output: Path) -> int:
    from shared.ops import artefact_bytes, open_bus

    async with open_bus(cfg) as bus:
        data = await artefact_bytes(bus, request_id, fmt)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return len(data)


async def _artefact_url(cfg: Settings, request_id: str, fmt: str, expires: Any) -> str:
    from shared.ops import artefact_url, open_bus

    async with open_bus(cfg) as bus:
        return await artefact_url(bus, request_id, fmt, expires)


# ---- delivery ----------------------------------------------------------------------------
@app.command()
def deliver(
    request_id: str,
    email: list[str] = typer.Option([], "--email", help="Recipient (repeatable)"),
    s3: str | None = typer.Option(None, "--s3", help="bucket/key"),
    webhook: str | None = typer.Option(None, "--webhook", help="URL"),
    folder: str | None = typer.Option(None, "--folder", help="Folder under PRESSROOM_OUT_DIR"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Deliver an already rendered report again (the legacy send-report.py)."""
    deliveries: list[dict[str, Any]] = []
    if email:
        deliveries.append({"channel": "email", "to": email})
    if s3:
        bucket, _, key = s3.partition("/")
        deliveries.append({"channel": "s3", "bucket": bucket, "key": key or None})
    if webhook:
        deliveries.append({"channel": "webhook", "url": webhook})
    if folder:
        deliveries.append({"channel": "file", "path": folder})
    if not deliveries:
        fail("name at least one of --email, --s3, --webhook, --folder")
    results = run(_deliver_again(settings(), request_id, deliveries))
    if as_json:
        emit_json(results)
    for result in results:
        if not as_json:
            mark = "[green]ok[/]" if result["ok"] else "[red]failed[/]"
            out.print(f"{mark} {result['channel']}: {result['target']} {result['detail']}")
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


async def _deliver_again(
    cfg: Settings, request_id: str, deliveries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    from services.distributor.channels import Parcel, default_channels
    from shared.events import Delivery, ReportRendered
    from shared.ops import open_bus

    async with open_bus(cfg) as bus:
        entry = await (await bus.ledger()).get(request_id)
        if entry is None or not entry.artefacts:
            raise PressroomError(f"request '{request_id}' has no rendered artefacts to deliver")
        request = ReportRequested(
            request_id=request_id,
            template=entry.template or "unknown.html",
            requested_by=entry.requested_by,
            requested_at=entry.requested_at or entry.updated_at,
        )
        event = ReportRendered(
            request=request,
            artefacts=entry.artefacts,
            template_version=entry.template_version or "",
            render_seconds=entry.render_seconds or 0.0,
        )
        parcel = Parcel(event=event, store=await bus.store())
        channels = default_channels(cfg)
        results = []
        for raw in deliveries:
            delivery = Delivery.model_validate({k: v for k, v in raw.items() if v is not None})
            try:
                result = await channels[delivery.channel].deliver(delivery, parcel)
                results.append(result.model_dump(mode="json"))
            except PressroomError as error:
                results.append(
                    {"channel": delivery.channel, "ok": False, "target": "", "detail": error.reason}
                )
        return results


@app.command()
def check(
    what: str = typer.Argument(..., help="email | webhook"),
    to: str | None = typer.Option(None, "--to", help="email: also send a test message here"),
    url: str | None = typer.Option(None, "--url", help="webhook: URL to send a signed ping to"),
) -> None:
    """Test the email or webhook configuration (the legacy test_email_config)."""
    cfg = settings()
    if what == "email":
        out.print(run(_check_email(cfg, to)))
    elif what == "webhook":
        if not url:
            fail("give --url for the webhook check")
        out.print(run(_check_webhook(cfg, url)))
    else:
        fail(f"unknown check '{what}' (known: email, webhook)")


async def _check_email(cfg: Settings, to: str | None) -> str:
    from email.message import EmailMessage

    from services.distributor.channels.email import smtp_session, validate_addresses

    if not cfg.smtp_host:
        raise PressroomError("PRESSROOM_SMTP_HOST is not set")
    recipients = validate_addresses(to) if to else []

    def probe() -> str:
        steps = [f"connected to {cfg.smtp_host}:{cfg.smtp_port}"]
        steps += ["STARTTLS ok"] if cfg.smtp_starttls else []
        steps += ["login ok"] if cfg.smtp_user else []
        try:
            with smtp_session(cfg) as smtp:
                smtp.noop()
                if recipients:
                    message = EmailMessage()
                    message["From"], message["To"] = cfg.smtp_from, ", ".join(recipients)
                    message["Subject"] = "Pressroom test message"
                    message.set_content("Pressroom can send email with this configuration.")
                    smtp.send_message(message)
                    steps.append(f"test message sent to {', '.join(recipients)}")
        except PressroomError as error:
            raise PressroomError(f"email check failed: {error.reason}") from None
        return "ok: " + ", ".join(steps)

    return await asyncio.to_thread(probe)


async def _check_webhook(cfg: Settings, url: str) -> str:
    from services.distributor.channels.webhook import WebhookChannel

    body = json.dumps({"type": "pressroom.test"}).encode()
    try:
        code, target = await WebhookChannel(cfg).post_signed(
            url, body, f"msg_test_{int(time.time())}"
        )
    except PressroomError as error:
        raise PressroomError(f"webhook check failed: {error.reason}") from None
    return f"ok: {target.origin.host} ({target.address}) accepted a signed test ping ({code})"


# ---- the bus: identities and topology ------------------------------------------------------
bus_app = typer.Typer(help="NATS identities, permissions, TLS and topology.", no_args_is_help=True)
app.add_typer(bus_app, name="bus")


@bus_app.command("auth")
def bus_auth(
    out_dir: Path = typer.Option(..., "--out", help="Folder for auth.conf and the role seeds."),
    tls: bool = typer.Option(False, "--tls", help="Also a CA and a server certificate."),
    host: str = typer.Option("localhost,127.0.0.1", "--host", help="Server names for TLS."),
    rotate: bool = typer.Option(False, "--rotate", help="New keys (and certificates)."),
) -> None:
    """Write a nats-server include with one least-privilege nkey user per role, and the seeds."""
    from shared.busauth import ROLES, generate

    hosts = [h.strip() for h in host.split(",") if h.strip()]
    if not hosts:
        fail("--host needs at least one name")
    result = generate(out_dir, tls=tls, hosts=hosts, rotate=rotate)
    out.print(f"wrote {result.folder}/auth.conf — include it from nats-server.conf")
    out.print(
        f"seeds (0600): {', '.join(f'{r}.nk' for r in ROLES)}"
        + (f" · kept: {', '.join(result.kept)}" if result.kept else "")
    )
    if tls:
        out.print("TLS: ca.pem, server-cert.pem, server-key.pem (clients: PRESSROOM_NATS_TLS_CA)")
    out.print(
        "workers: PRESSROOM_NATS_CREDENTIALS_DIR=<this folder> (each uses its role's seed); "
        "other systems: the publisher seed"
    )


@bus_app.command("setup")
def bus_setup() -> None:
    """Create or update every stream, consumer and bucket (needs the ops identity)."""
    cfg = settings()
    run(_prepare(cfg))
    out.print(f"ok: Pressroom's streams, consumers and buckets are ready on {cfg.bus_url_public}")


# ---- configuration -----------------------------------------------------------------------
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate the configuration and print it, secrets masked (exit 1 on any problem)."""
    from shared.settings import masked

    cfg = settings()
    schedules = _schedules(cfg)
    if not cfg.templates_dir.is_dir():
        fail(f"PRESSROOM_TEMPLATES_DIR '{cfg.templates_dir}' is not a folder")
    lib = _library(cfg)
    for schedule in schedules:
        try:
            lib.resolve(str(schedule.request.get("template", "")))
        except PressroomError as error:
            fail(f"schedule '{schedule.name}': {error.reason}")
    effective = masked(cfg)
    if as_json:
        emit_json(effective)
        return
    out.print(yaml.safe_dump(effective, sort_keys=True).rstrip(), markup=False, highlight=False)
    where = f"PRESSROOM_CONFIG={cfg.config}" if cfg.config else "no PRESSROOM_CONFIG file"
    out.print(
        f"ok: configuration valid ({where}; {len(schedules)} schedule(s), "
        f"{len(cfg.sources)} named source(s), {len(cfg.source_credentials)} credential(s))"
    )


# ---- backup and restore --------------------------------------------------------------------
@app.command("backup")
def backup_cmd(
    output: Path = typer.Argument(..., help="FILE.tar.gz"),
    include_secrets: bool = typer.Option(
        False, "--include-secrets", help="Keep credentials in the archived config."
    ),
) -> None:
    """Templates, config, ledger and dead letters in one archive (0600, secrets redacted)."""
    cfg = settings()
    counts = run(_backup(cfg, output, include_secrets))
    secrets = "with secrets" if include_secrets else "secrets redacted"
    out.print(
        f"wrote {output} (0600): {counts['ledger_entries']} ledger entries, "
        f"{counts['dead_letters']} dead letters, templates, config ({secrets})"
    )


async def _backup(cfg: Settings, output: Path, include_secrets: bool) -> Any:
    from shared.ops import backup, open_bus

    async with open_bus(cfg) as bus:
        return await backup(
            bus, output, cfg.templates_dir, cfg.config, include_secrets=include_secrets
        )


@app.command("restore")
def restore_cmd(
    archive: Path = typer.Argument(..., help="FILE.tar.gz from pressroom backup"),
) -> None:
    """Put back missing ledger entries and dead letters (templates/config: extract by hand)."""
    if not archive.is_file():
        fail(f"no backup at '{archive}'")
    counts = run(_restore(settings(), archive))
    out.print(
        f"restored {counts['ledger_entries']} ledger entries and "
        f"{counts['dead_letters']} dead letters"
    )


async def _restore(cfg: Settings, archive: Path) -> Any:
    import tarfile

    from shared.ops import open_bus, restore

    async with open_bus(cfg) as bus:
        try:
            return await restore(bus, archive)
        except (tarfile.TarError, KeyError, ValueError) as error:
            raise PressroomError(f"'{archive}' is not a pressroom backup: {error}") from None


# ---- dead letters ------------------------------------------------------------------------
@dlq_app.command("ls")
def dlq_ls(
    stage: str | None = typer.Option(None, help="fetcher, renderer or distributor"),
    reason: str | None = typer.Option(None, help="Text the reason contains"),
    since: str | None = typer.Option(None, help="ISO time or age like 2h, 30m, 1d"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters, oldest first."""
    from shared.ops import DEAD_LETTER_STAGES

    if stage is not None and stage not in DEAD_LETTER_STAGES:
        fail(f"no stage '{stage}' (stages: {', '.join(DEAD_LETTER_STAGES)})")
    records = run(_dlq(settings()))
    cutoff = _since(since) if since else None
    rows = [
        r.summary()
        for r in records
        if (not stage or r.letter.stage == stage)
        and (not reason or reason.lower() in r.letter.reason.lower())
        and (cutoff is None or (r.time is not None and r.time.timestamp() >= cutoff))
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        filters = [
            f"--{k} {v}" for k, v in (("stage", stage), ("reason", reason), ("since", since))
        ]
        filters = [f for f in filters if not f.endswith(" None")]
        out.print(
            f"no dead letters match {' '.join(filters)} ({len(records)} in all)"
            if filters and records
            else "no dead letters: nothing has failed for good"
        )
        return
    columns = [Col("id", justify="right"), Col("time"), Col("stage"), Col("request_id")]
    columns += [Col("attempts", justify="right"), Col("reason", long=True)]
    print_table(
        out,
        columns,
        [
            [
                str(row["id"]),
                (row["time"] or "")[:19],
                row["stage"],
                row["request_id"] or "",
                str(row["attempts"]),
                row["reason"],
            ]
            for row in rows
        ],
    )


def _since(text: str) -> float:
    from datetime import datetime

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return time.time() - int(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        fail(f"--since expects an ISO time or an age like 2h, got '{text}'")


async def _dlq(cfg: Settings) -> Any:
    from shared.ops import dead_letters, open_bus

    async with open_bus(cfg) as bus:
        return await dead_letters(bus)


@dlq_app.command("show")
def dlq_show(
    ref: str = typer.Argument(..., metavar="ID|REQUEST_ID", help="Dead-letter id or request id"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One dead letter, with its original message (the newest, given a request id)."""
    records = run(_dlq_find(settings(), ref))
    if not records:
        fail(f"no dead letter with {'id' if ref.isdigit() else 'request_id'} {ref}")
    record = records[-1]
    if len(records) > 1:
        others = ", ".join(str(r.id) for r in records[:-1])
        err.print(
            f"note: {len(records)} dead letters for {ref}; showing the newest (others: {others})"
        )
    data = {**record.summary(), "letter": json.loads(record.letter.model_dump_json())}
    if as_json:
        emit_json(data)
        return
    for key, value in record.summary().items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False)
    out.print("[bold]payload[/]:")
    payload = record.letter.payload
    with suppress(ValueError):  # indented JSON, printed as it is: never re-wrapped mid-word
        payload = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    out.print(payload, highlight=False, markup=False, soft_wrap=True)


async def _dlq_find(cfg: Settings, ref: str) -> Any:
    from shared.ops import find_dead_letters, open_bus

    async with open_bus(cfg) as bus:
        return await find_dead_letters(bus, ref)


@dlq_app.command("replay")
def dlq_replay(
    ids: list[int] = typer.Argument(None),
    all_: bool = typer.Option(False, "--all"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Republish dead letters to their original subjects (fresh attempt count)."""
    if not ids and not all_:
        fail("give dead-letter IDs or --all")
    replayed = run(_dlq_replay(settings(), ids or None, quiet=as_json))
    if as_json:
        emit_json({"replayed": replayed})
    else:
        out.print(f"replayed {len(replayed)} dead letter(s)")


async def _dlq_replay(cfg: Settings, ids: list[int] | None, *, quiet: bool) -> list[dict[str, Any]]:
    from rich.progress import Progress

    from shared.ops import dead_letters, open_bus, replay

    async with open_bus(cfg) as bus:
        targets = ids if ids is not None else [r.id for r in await dead_letters(bus)]
        done: list[dict[str, Any]] = []
        with Progress(console=err, disable=quiet or len(targets) < 5) as progress:
            task = progress.add_task("replaying", total=len(targets))
            for seq in targets:
                subject = await replay(bus, seq)
                done.append({"id": seq, "subject": subject})
                progress.advance(task)
        return done


@dlq_app.command("purge")
def dlq_purge(
    ids: list[int] = typer.Argument(None),
    all_: bool = typer.Option(False, "--all"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before purging --all."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete dead letters for good (--all asks first, unless --yes)."""
    if not ids and not all_:
        fail("give dead-letter IDs or --all")
    if all_ and not yes:
        if not sys.stdin.isatty():
            fail("purging every dead letter cannot be undone: add --yes to confirm")
        if not typer.confirm("Delete every dead letter for good?", default=False):
            raise typer.Exit(1)
    removed = run(_dlq_purge(settings(), None if all_ else ids))
    if as_json:
        emit_json({"purged": removed})
    else:
        out.print(f"purged {removed} dead letter(s)")


async def _dlq_purge(cfg: Settings, ids: list[int] | None) -> int:
    from shared.ops import open_bus, purge

    async with open_bus(cfg) as bus:
        return await purge(bus, ids)


def main() -> None:
    """Entry point: usage errors are one line too, like every other error."""
    from shared.logging import configure_logging

    configure_logging(
        "pressroom-cli", json=False, level=os.environ.get("PRESSROOM_CLI_LOG_LEVEL", "WARNING")
    )
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        raise SystemExit(130) from None
    except Exception as error:
        # Click's usage errors (bad option, unknown command, wrong type) know how to say it.
        if hasattr(error, "format_message") and hasattr(error, "exit_code"):
            ctx = getattr(error, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"[bold red]error:[/] {error.format_message()}{hint}", highlight=False)
            raise SystemExit(int(error.exit_code)) from None
        raise
    raise SystemExit(code if isinstance(code, int) else 0)
