"""The console's pieces without servers: download tokens, byte ranges, the reports index,
users and the login limit. The browser tests (tests/browser/) run them for real."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.console.caches import _keys_of
from services.console.web.auth import (
    LoginLimiter,
    add_user,
    check_password,
    load_users,
    remove_user,
)
from services.console.web.downloads import byte_range
from services.console.web.index import Filters, LedgerIndex
from services.fetcher.access import expand_named
from services.fetcher.cache import cache_key
from shared.adapters.ledger import LedgerEntry, StageRecord
from shared.downloadlinks import (
    LinkRefused,
    console_address,
    console_secret,
    download_link,
    local_console,
    mint_token,
    record_console_address,
    verify_token,
)
from shared.errors import PressroomError
from shared.events import Artefact, Source
from shared.settings import Settings

ARTEFACT = Artefact(
    format="pdf",
    key="reports/2026/11/23/weekly.pdf",
    size=10,
    sha256="ab" * 32,
    content_type="application/pdf",
)
SECRET = b"a secret of the console, long enough"


def later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def test_a_token_names_its_artefact_content_and_expiry() -> None:
    claim = verify_token(SECRET, mint_token(SECRET, ARTEFACT, later()))
    assert (claim.key, claim.sha256) == (ARTEFACT.key, ARTEFACT.sha256)


@pytest.mark.parametrize(
    "bend",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # the signature changed
        lambda t: mint_token(b"another secret entirely", ARTEFACT, later()),  # not ours
        lambda t: "not-a-token",
        lambda t: t.split(".")[0],  # no signature at all
        lambda t: "",
    ],
)
def test_a_changed_or_foreign_token_is_refused(bend: object) -> None:
    token = mint_token(SECRET, ARTEFACT, later())
    with pytest.raises(LinkRefused):
        verify_token(SECRET, bend(token))  # type: ignore[operator]


def test_another_artefact_cannot_be_swapped_into_a_signed_token() -> None:
    import base64
    import json

    token = mint_token(SECRET, ARTEFACT, later())
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    body["k"] = "reports/someone-elses.pdf"
    swapped = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(LinkRefused, match="signature"):
        verify_token(SECRET, f"{swapped}.{token.split('.')[1]}")


def test_an_expired_token_is_refused_with_when() -> None:
    token = mint_token(SECRET, ARTEFACT, datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(LinkRefused, match="expired"):
        verify_token(SECRET, token)


def test_links_need_the_public_url_and_a_sane_lifetime(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # type: ignore[call-arg]
    with pytest.raises(PressroomError, match="PRESSROOM_PUBLIC_URL"):
        download_link(settings, ARTEFACT, timedelta(hours=1))
    public = Settings(data_dir=tmp_path, public_url="https://pr.example.com/")  # type: ignore[call-arg]
    link = download_link(public, ARTEFACT, timedelta(hours=1))
    assert link.startswith("https://pr.example.com/a/")
    with pytest.raises(PressroomError, match="30 days"):
        download_link(public, ARTEFACT, timedelta(days=31))
    # Unset, a caller that knows the console's address gives it; the public URL wins.
    assert download_link(settings, ARTEFACT, timedelta(hours=1), base="http://h:1/").startswith(
        "http://h:1/a/"
    )
    assert download_link(public, ARTEFACT, timedelta(hours=1), base="http://h:1/").startswith(
        "https://pr.example.com/a/"
    )


def test_a_link_goes_to_the_console_started_here_or_on_the_embedded_bus_the_default(
    tmp_path: Path,
) -> None:
    embedded = Settings(data_dir=tmp_path)  # type: ignore[call-arg]
    assert local_console(embedded) == "http://127.0.0.1:8480"
    remote = Settings(data_dir=tmp_path, nats_url="nats://bus.example.com:4222")  # type: ignore[call-arg]
    assert local_console(remote) is None
    record_console_address(remote, "http://127.0.0.1:18480")
    assert local_console(remote) == local_console(embedded) == "http://127.0.0.1:18480"


@pytest.mark.parametrize(
    ("host", "address"),
    [("127.0.0.1", "http://127.0.0.1:8480"), ("0.0.0.0", "http://127.0.0.1:8480"),
     ("::1", "http://[::1]:8480"), ("pr.internal", "http://pr.internal:8480")],
)  # fmt: skip
def test_the_consoles_own_address_is_one_a_browser_here_can_open(
    tmp_path: Path, host: str, address: str
) -> None:
    settings = Settings(data_dir=tmp_path, console_host=host)  # type: ignore[call-arg]
    assert console_address(settings) == address


def test_the_secret_is_made_once_private_and_then_shared(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # type: ignore[call-arg]
    first = console_secret(settings)
    assert console_secret(settings) == first and len(first) >= 32
    mode = stat.S_IMODE((tmp_path / "console.secret").stat().st_mode)
    assert mode == 0o600


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=95-200", (95, 100)),
        ("items=0-1", None),  # not understood: the whole file
        ("bytes=0-1,5-6", None),
    ],
)
def test_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=x-3", "bytes=-0"])
def test_unsatisfiable_ranges_are_errors(header: str) -> None:
    with pytest.raises(ValueError):
        byte_range(header, 100)


def ledger_entry(n: int, status: str = "delivered", by: str = "billing") -> LedgerEntry:
    at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n)
    stages = {"fetcher": StageRecord(state="done", seq=n, started_at=at, finished_at=at)}
    if status == "delivered":
        stages["renderer"] = StageRecord(state="done", seq=n, started_at=at, finished_at=at)
        stages["distributor"] = StageRecord(state="done", seq=n, started_at=at, finished_at=at)
    if status == "failed":
        stages["renderer"] = StageRecord(state="failed", seq=n, error="broken", started_at=at)
    return LedgerEntry(
        request_id=f"r-{n:05d}",
        template="weekly" if n % 2 else "daily.html",
        requested_by=by,
        requested_at=at,
        stages=stages,
    )


def test_pages_walk_newest_first_without_gaps_or_repeats() -> None:
    index = LedgerIndex()
    for n in range(1, 236):
        index.put(ledger_entry(n))
    seen: list[str] = []
    cursor = None
    while True:
        page = index.page(Filters(), cursor, 50)
        seen += [r.request_id for r in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"r-{n:05d}" for n in range(235, 0, -1)]


def test_filters_select_by_status_template_schedule_and_id() -> None:
    index = LedgerIndex()
    index.loaded.set()
    for n in range(1, 41):
        by = "scheduler:weekly" if n % 4 == 0 else "billing"
        index.put(ledger_entry(n, "failed" if n % 10 == 0 else "delivered", by))
    failed = index.page(Filters(status="failed"), None, 50).rows
    assert [r.request_id for r in failed] == ["r-00040", "r-00030", "r-00020", "r-00010"]
    weekly = index.page(Filters(template="weekly.html"), None, 50).rows
    assert weekly and all(int(r.request_id[2:]) % 2 for r in weekly)
    scheduled = index.page(Filters(schedule="weekly"), None, 50).rows
    assert len(scheduled) == 10 and all(r.schedule == "weekly" for r in scheduled)
    assert [r.request_id for r in index.page(Filters(q="r-0003"), None, 50).rows][:1] == ["r-00039"]


def test_an_update_replaces_its_row_and_reaches_listeners() -> None:
    index = LedgerIndex()
    index.loaded.set()
    index.put(ledger_entry(1, "requested"))
    with index.listen() as queue:
        index.put(ledger_entry(1, "delivered"))
        assert queue.get_nowait().status == "delivered"
    assert [r.status for r in index.page(Filters(), None, 50).rows] == ["delivered"]


def test_users_are_kept_hashed_privately_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, "olga", "ops", "a password long enough")
    text = path.read_text()
    assert "a password long enough" not in text and "$argon2" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert check_password(path, "olga", "a password long enough") is not None
    assert check_password(path, "olga", "not her password at all") is None
    assert check_password(path, "nobody", "a password long enough") is None
    remove_user(path, "olga")
    assert load_users(path) == {}


@pytest.mark.parametrize(
    ("name", "role", "password", "why"),
    [
        ("olga", "admin", "a password long enough", "unknown role"),
        ("../x", "ops", "a password long enough", "user name"),
        ("olga", "ops", "short", "12 characters"),
    ],
)
def test_bad_users_are_refused(
    tmp_path: Path, name: str, role: str, password: str, why: str
) -> None:
    with pytest.raises(PressroomError, match=why):
        add_user(tmp_path / "users.yaml", name, role, password)


def test_logins_are_limited_per_address_and_per_name() -> None:
    limiter = LoginLimiter(attempts=3, window=60)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1", "olga") == 0
        limiter.failed("10.0.0.1", "olga")
    assert limiter.retry_after("10.0.0.1", "someone") > 0  # the address is blocked
    assert limiter.retry_after("10.0.0.9", "olga") > 0  # and so is the name
    assert limiter.retry_after("10.0.0.9", "vic") == 0


def test_a_short_console_secret_is_refused_with_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.settings import load_settings

    monkeypatch.setenv("PRESSROOM_CONSOLE_SECRET", "REPLACE_ME")
    with pytest.raises(PressroomError, match="PRESSROOM_CONSOLE_SECRET: is 10 characters"):
        load_settings()


def test_a_time_window_selects_reports_requested_within_it() -> None:
    index = LedgerIndex()
    for n in range(1, 61):  # one a minute from 2026-11-01 00:01
        index.put(ledger_entry(n))
    start = datetime(2026, 11, 1, 0, 10, tzinfo=UTC)
    window = Filters(since=start, until=start + timedelta(minutes=5))
    rows = index.page(window, None, 50).rows
    assert [r.request_id for r in rows] == [f"r-{n:05d}" for n in range(14, 9, -1)]


def test_cache_clear_finds_a_config_sources_entry_whatever_a_request_called_it(
    tmp_path: Path,
) -> None:
    # The entry is keyed by the source's spec; the names stored with it are the last
    # writer's. `cache clear feed` must reach it even when a request wrote it as `f2`.
    cfg = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, sources={"feed": {"kind": "http", "url": "https://api.example.com/x"}}
    )
    aliased = expand_named(Source(name="f2", source="feed", cache=60), cfg)[0]
    bus: Any = SimpleNamespace(settings=cfg)
    assert _keys_of(bus, ["feed", "nothing-called-that"]) == {"feed": {cache_key(aliased)}}


def test_the_timeline_shows_the_stages_a_report_went_through_with_status_s_waits() -> None:
    from services.console.requests import queue_waits
    from services.console.web.reports import _timeline
    from shared.burst import BurstTally

    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def done(start: float, seconds: float) -> StageRecord:
        # The claim is written CLAIM_AFTER into the work: `started_at` is not when it began.
        return StageRecord(
            state="done",
            seq=1,
            started_at=t0 + timedelta(seconds=start + 0.9),
            finished_at=t0 + timedelta(seconds=start + seconds),
            seconds=seconds,
        )

    child = LedgerEntry(
        request_id="p/a1",
        requested_at=t0,
        stages={"renderer": done(100.0, 2.0), "distributor": done(103.0, 1.0)},
    )
    steps = {s["name"]: s for s in _timeline(child)}
    assert "fetcher" not in steps  # a burst's child starts at the renderer: nothing waits
    assert steps["renderer"]["wait"] == 100.0 == queue_waits(child)["renderer"]
    assert steps["renderer"]["at"] == t0 + timedelta(seconds=100)
    assert steps["distributor"]["wait"] == 1.0
    parent = LedgerEntry(
        request_id="p",
        requested_at=t0,
        stages={"fetcher": done(0.0, 1.0)},
        burst=BurstTally.planned(2),
    )
    shown = [(s["name"], s.get("label") or s["state"]) for s in _timeline(parent)]
    assert shown == [
        ("queued", "done"),
        ("fetcher", "done"),
        ("renderer", "by its children"),
        ("distributor", "by its children"),
    ]
