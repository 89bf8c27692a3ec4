"""`pressroom logs`: the stack's log files (what `pressroom up` writes), as readable lines."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from services.console.cli._common import fail, out, settings
from services.console.cli._output import visible

# Shown first on each line, in this order; every other field follows as key=value.
_HEAD = ("timestamp", "level", "event", "service")
_QUIET = {"service", "span_id"}  # the file names the service; span ids are for the tracer


@dataclass(frozen=True)
class Line:
    source: str  # the log file's name without .log: fetcher-1, renderer-2, …
    text: str  # as written
    record: dict[str, Any] | None  # the JSON line parsed, or None (a traceback, a plain line)

    @property
    def timestamp(self) -> str:
        return str((self.record or {}).get("timestamp", ""))

    @property
    def request_id(self) -> str | None:
        value = (self.record or {}).get("request_id")
        return None if value is None else str(value)


def log_files(folder: Path, service: str | None) -> list[Path]:
    """The log files of `service` (renderer: every renderer-N; renderer-2: that one)."""
    found = sorted(folder.glob("*.log"))
    if service is None:
        return found
    return [p for p in found if p.stem == service or p.stem.rsplit("-", 1)[0] == service]


def parse(source: str, text: str) -> Line:
    record = None
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        record = loaded if isinstance(loaded, dict) else None
    return Line(source, text, record)


def readable(line: Line, width: int) -> str:
    """`15:51:08.482 renderer-1 info  stage ready  stage=renderer …`, wrapped at words with
    the continuation indented, so it fits the terminal."""
    if line.record is None:
        text = f"{'':12} {line.source} {line.text}"
    else:
        rec = line.record
        clock = str(rec.get("timestamp", ""))[11:23]
        level = str(rec.get("level", ""))
        extra = " ".join(
            f"{k}={_value(v)}" for k, v in rec.items() if k not in _HEAD and k not in _QUIET
        )
        text = f"{clock:12} {line.source} {level:5} {rec.get('event', '')}" + (
            f"  {extra}" if extra else ""
        )
    text = visible(text)  # a logged template name or reason is text, controls written out
    if len(text) <= width:
        return text
    return textwrap.fill(
        text,
        width=max(width, 40),
        subsequent_indent=" " * 13,
        break_long_words=False,  # ids and URLs stay whole
        break_on_hyphens=False,
    )


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def _lines(path: Path, data: bytes) -> Iterator[Line]:
    for raw in data.decode("utf-8", errors="replace").splitlines():
        if raw.strip():
            yield parse(path.stem, raw.rstrip())


def _kept(lines: Iterable[Line], request_id: str | None) -> Iterator[Line]:
    return (line for line in lines if request_id is None or line.request_id == request_id)


def _merged(lines: list[Line]) -> list[Line]:
    """In time order across files; a line without a time (a traceback) stays after the line
    before it in its own file."""
    keyed: list[tuple[str, int, Line]] = []
    last: dict[str, str] = {}
    for index, line in enumerate(lines):
        stamp = line.timestamp or last.get(line.source, "")
        last[line.source] = stamp
        keyed.append((stamp, index, line))
    return [line for _, _, line in sorted(keyed, key=lambda k: (k[0], k[1]))]


def logs(
    service: str | None = typer.Argument(
        None, help="fetcher, renderer, distributor, scheduler (every replica), or renderer-2"
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    request_id: str | None = typer.Option(None, "--request", help="Only this request's lines."),
    lines: int = typer.Option(100, "--lines", "-n", help="How many of the last lines (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="The JSON lines as written."),
) -> None:
    """The stack's logs from the files `pressroom up` writes (PRESSROOM_DATA_DIR/logs),
    merged in time order; -f follows them (Ctrl-C stops)."""
    cfg = settings()
    folder = cfg.data_dir / "logs"
    if not folder.is_dir():
        fail(
            f"no logs in {folder}: `pressroom up` (`make run`) writes them there; in "
            "containers, `docker compose logs SERVICE` shows them"
        )
    files = log_files(folder, service)
    if not files and not follow:
        known = sorted({p.stem.rsplit("-", 1)[0] for p in folder.glob("*.log")})
        fail(f"no log of '{service}' in {folder} (there are: {', '.join(known) or 'none'})")

    def show(found: list[Line]) -> None:
        for line in found:
            if as_json:
                sys.stdout.write(line.text + "\n")
                sys.stdout.flush()
            else:
                out.print(readable(line, out.width), markup=False, highlight=False, soft_wrap=True)

    offsets: dict[Path, int] = {}
    last: list[Line] = []
    for path in files:
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        offsets[path] = len(complete)
        # The last lines of each file are enough to find the last lines of them all.
        last.extend(deque(_kept(_lines(path, complete), request_id), maxlen=lines or None))
    merged = _merged(last)
    try:  # under -f, a Ctrl-C while the last lines are still printing stops as cleanly
        show(merged[-lines:] if lines else merged)
        while follow:
            time.sleep(0.5)
            fresh: list[Line] = []
            for path in log_files(folder, service):
                start = offsets.get(path, 0)
                try:
                    with path.open("rb") as handle:
                        if path.stat().st_size < start:
                            start = 0  # the file was truncated or replaced
                        handle.seek(start)
                        data = handle.read()
                except OSError:
                    continue
                complete = data[: data.rfind(b"\n") + 1]  # a half-written line waits
                offsets[path] = start + len(complete)
                fresh.extend(_kept(_lines(path, complete), request_id))
            show(_merged(fresh))
    except KeyboardInterrupt:
        if not follow:
            raise


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
