"""Data sources against real servers: Prometheus, GitHub- and Jira-shaped APIs, failures."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.fetcher.cache import SourceCache
from services.fetcher.core import CacheStats, gather_context
from services.fetcher.sources import default_sources
from shared.adapters.memory import MemoryKeyValue
from shared.errors import PermanentError, TransientError
from shared.events import ReportRequested, Source
from shared.settings import Settings
from tests.helpers import Outcomes, Stack, delivered_file, unique
from tests.servers import HttpReceiver, PrometheusServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    yield server
    server.stop()


def github_pages(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
    base = "/repos/org/portfolio/pulls"
    if not path.startswith(base):
        return 404, b'{"message": "Not Found"}', {}
    query = parse_qs(urlsplit(path).query)
    page = int(query.get("page", ["1"])[0])
    items = [
        {"number": page * 100 + i, "title": f"PR {page}-{i}", "state": "open"} for i in range(2)
    ]
    headers = {"Content-Type": "application/json"}
    if page < 3:
        headers["Link"] = (
            f'<{RECEIVER_URL[0]}{base}?state=all&page={page + 1}>; rel="next", '
            f'<{RECEIVER_URL[0]}{base}?page=3>; rel="last"'
        )
    return 200, json.dumps(items).encode(), headers


def jira_pages(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
    start = int(parse_qs(urlsplit(path).query)["startAt"][0])
    batch = [
        {"key": f"OPS-{n}", "fields": {"summary": f"Issue {n}"}}
        for n in range(start, min(start + 100, 250))
    ]
    body = {"startAt": start, "maxResults": 100, "total": 250, "issues": batch}
    return 200, json.dumps(body).encode(), {"Content-Type": "application/json"}


def api(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
    if path.startswith("/repos/"):
        return github_pages(path, count)
    if path.startswith("/rest/api/2/search"):
        return jira_pages(path, count)
    if path.startswith("/slow"):
        time.sleep(2)
    if path.startswith("/busy"):
        return 429, b"", {"Retry-After": "7"}
    if path.startswith("/missing"):
        return 404, b"", {}
    if path.startswith("/html"):
        return 200, b"<html>", {"Content-Type": "text/html"}
    projects = [{"name": "Atlas", "open_prs": 4 + count}, {"name": "Borealis", "open_prs": 2}]
    return 200, json.dumps({"projects": projects}).encode(), {"Content-Type": "application/json"}


RECEIVER_URL: list[str] = [""]


@pytest.fixture(scope="module")
def http_api() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(api).start()
    RECEIVER_URL[0] = receiver.url
    yield receiver
    receiver.stop()


def settings(**overrides: Any) -> Settings:
    # The operator allows the loopback test servers as request-supplied source URLs.
    defaults: dict[str, Any] = {
        "fetch_timeout": 1.0,
        "fetch_deadline": 5.0,
        "source_allow": "127.0.0.1",
    }
    return Settings(**{**defaults, **overrides})


async def fetch(source: dict[str, Any], **overrides: Any) -> Any:
    request = ReportRequested(template="t.html", sources=[Source.model_validate(source)])
    context = await gather_context(request, default_sources(), settings(**overrides))
    return context[source["name"]]


async def test_prometheus_instant_query_returns_the_api_result(
    prometheus: PrometheusServer,
) -> None:
    result = await fetch(
        {"name": "up", "kind": "prometheus", "url": prometheus.url, "query": 'up{job="prometheus"}'}
    )
    assert result[0]["metric"]["job"] == "prometheus"
    assert result[0]["value"][1] == "1"


async def test_prometheus_range_query_returns_series(prometheus: PrometheusServer) -> None:
    await asyncio.sleep(2)
    result = await fetch(
        {
            "name": "up",
            "kind": "prometheus",
            "query": "up",
            "start": "-5m",
            "end": "now",
            "step": "1s",
        },
        prometheus_url=prometheus.url,
    )
    assert result and len(result[0]["values"]) >= 2


async def test_a_bad_prometheus_query_is_permanent_and_names_the_source(
    prometheus: PrometheusServer,
) -> None:
    with pytest.raises(PermanentError, match=r"source 'bad'.*bad_data"):
        await fetch({"name": "bad", "kind": "prometheus", "url": prometheus.url, "query": "sum(("})


async def test_github_follows_link_pagination_with_the_configured_token(
    http_api: HttpReceiver,
) -> None:
    creds = {"github": {"token": "ghp_test", "api_url": http_api.url}}
    prs = await fetch(
        {
            "name": "prs",
            "kind": "github",
            "repo": "org/portfolio",
            "endpoint": "pulls",
            "params": {"state": "all"},
            "credentials": "github",
        },
        source_credentials=creds,
    )
    assert [p["number"] for p in prs] == [100, 101, 200, 201, 300, 301]
    hits = [h for h in http_api.hits if h.path.startswith("/repos/")]
    assert all(h.headers["authorization"] == "Bearer ghp_test" for h in hits)
    assert "state=all" in hits[0].path and "per_page=100" in hits[0].path


async def test_github_stops_at_the_page_limit(http_api: HttpReceiver) -> None:
    prs = await fetch(
        {
            "name": "prs",
            "kind": "github",
            "repo": "org/portfolio",
            "endpoint": "pulls",
            "api_url": http_api.url,
            "max_pages": 2,
        }
    )
    assert len(prs) == 4


async def test_jira_pages_through_a_jql_search(http_api: HttpReceiver) -> None:
    issues = await fetch(
        {
            "name": "ops",
            "kind": "jira",
            "url": http_api.url,
            "jql": "project = OPS ORDER BY created DESC",
        }
    )
    assert len(issues) == 250 and issues[-1]["key"] == "OPS-249"


async def test_http_json_source_with_params(http_api: HttpReceiver) -> None:
    data = await fetch(
        {
            "name": "inv",
            "kind": "http",
            "url": f"{http_api.url}/api/projects",
            "params": {"team": "core"},
        }
    )
    assert data["projects"][1]["name"] == "Borealis"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url_path", "error", "text"),
    [
        ("/slow", TransientError, "timed out"),
        ("/busy", TransientError, "answered 429"),
        ("/missing", PermanentError, "answered 404"),
        ("/html", PermanentError, "is not valid JSON"),
    ],
)
async def test_failures_are_classified_and_name_the_source(
    http_api: HttpReceiver, url_path: str, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text) as caught:
        await fetch({"name": "inv", "kind": "http", "url": f"{http_api.url}{url_path}"})
    assert "inv" in str(caught.value)
    if url_path == "/busy":
        assert caught.value.retry_after == 7  # type: ignore[attr-defined]


async def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(TransientError, match="cannot reach"):
        await fetch({"name": "gone", "kind": "http", "url": f"http://127.0.0.1:{closed_port()}/"})


async def test_sources_are_fetched_concurrently(http_api: HttpReceiver) -> None:
    sources = [
        Source(name=f"s{i}", kind="http", url=f"{http_api.url}/slow/{i}")  # type: ignore[call-arg]
        for i in range(4)
    ]
    request = ReportRequested(template="t.html", sources=sources)
    started = time.monotonic()
    context = await gather_context(
        request, default_sources(), settings(fetch_timeout=5, fetch_deadline=20)
    )
    assert len(context) == 4
    assert time.monotonic() - started < 2 * 4  # four 2-second sources did not run one by one


async def test_cached_sources_are_served_from_the_cache_within_their_ttl(
    http_api: HttpReceiver,
) -> None:
    cache = SourceCache(MemoryKeyValue())
    source = Source.model_validate(
        {"name": "inv", "kind": "http", "cache": 60, "url": f"{http_api.url}/api/cached"}
    )
    request = ReportRequested(template="t.html", sources=[source], params={"extra": 1})
    first, second = CacheStats(), CacheStats()
    a = await gather_context(request, default_sources(), settings(), cache, first)
    b = await gather_context(request, default_sources(), settings(), cache, second)
    assert (first.hits, first.misses, second.hits, second.misses) == (0, 1, 1, 0)
    assert a == b and len(http_api.on("/api/cached")) == 1
    assert b["extra"] == 1  # inline params still merged over the cached data


async def test_a_config_source_used_under_another_name_is_labelled_and_cached_by_its_own(
    http_api: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request calls the config's `inventory-api` `inv`: the fetch metric (what the source
    # alert's `sources test <label>` advice uses) and the cache record name the config source.
    from services.fetcher import core

    labels: list[str] = []
    monkeypatch.setattr(core, "source_fetched", lambda name, *rest: labels.append(name))
    kv = MemoryKeyValue()
    configured = settings(sources={"inventory-api": {"kind": "http", "url": f"{http_api.url}/inv"}})
    source = Source.model_validate({"name": "inv", "source": "inventory-api", "cache": 60})
    request = ReportRequested(template="t.html", sources=[source])
    await gather_context(request, default_sources(), configured, SourceCache(kv), CacheStats())
    assert labels == ["inventory-api"]
    [(_, stored)] = [(key, await kv.get(key)) for key in await kv.keys()]
    record = json.loads(stored.value)
    assert (record["source"], record["config_source"]) == ("inv", "inventory-api")


async def test_a_live_api_and_live_prometheus_render_their_current_values(
    stack: Stack,
    outcomes: Outcomes,
    nc: Any,
    prometheus: PrometheusServer,
    http_api: HttpReceiver,
) -> None:
    (stack.templates / "live.html").write_text(
        "<h1>Live</h1>{% for p in inventory.projects %}<p>{{ p.name }} has {{ p.open_prs }} "
        "open PRs</p>{% endfor %}<p>prometheus up={{ uptime[0].value[1] }}</p>"
    )
    rid = unique("live")
    body = {
        "request_id": rid,
        "template": "live.html",
        "sources": [
            {"name": "inventory", "kind": "http", "url": f"{http_api.url}/api/live"},
            {
                "name": "uptime",
                "kind": "prometheus",
                "url": prometheus.url,
                "query": 'up{job="prometheus"}',
            },
        ],
    }
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.delivered_event(rid)
    from tests.pdftext import pdf_text

    text = pdf_text(delivered_file(stack.out, rid))
    served = len(http_api.on("/api/live"))
    assert f"Atlas has {4 + served} open PRs" in text
    assert "prometheus up=1" in text


async def test_an_unreachable_source_fails_naming_it_after_bounded_retries(
    stack: Stack, outcomes: Outcomes, nc: Any
) -> None:
    rid = unique("unreachable")
    url = f"http://127.0.0.1:{closed_port()}/api"
    body = {
        "request_id": rid,
        "template": "weekly.html",
        "sources": [{"name": "inventory", "kind": "http", "url": url}],
    }
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    failed = await outcomes.failed_event(rid)
    assert failed["stage"] == "fetcher"
    assert "source 'inventory'" in failed["reason"] and "cannot reach" in failed["reason"]
    assert failed["attempts"] == 3 and failed["reason"].startswith("gave up after 3 attempts")


async def test_a_context_too_big_for_a_message_travels_by_reference(
    stack: Stack, outcomes: Outcomes, nc: Any
) -> None:
    (stack.templates / "big.html").write_text("<p>{{ blob | length }} characters</p>")
    rid = unique("claimcheck")
    body = {"request_id": rid, "template": "big.html", "params": {"blob": "x" * 400_000}}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.delivered_event(rid)
    from tests.pdftext import pdf_text

    assert "400000 characters" in pdf_text(delivered_file(stack.out, rid))


def test_data_files_are_read_from_the_data_folder_only(tmp_path: Path) -> None:
    (tmp_path / "teams.csv").write_text("team,size\ncore,5\nops,3\n")
    teams = asyncio.run(
        fetch({"name": "teams", "kind": "file", "path": "teams.csv"}, data_files_dir=tmp_path)
    )
    assert teams == [{"team": "core", "size": "5"}, {"team": "ops", "size": "3"}]
    with pytest.raises(PermanentError, match="inside"):
        asyncio.run(
            fetch({"name": "x", "kind": "file", "path": "../etc/passwd"}, data_files_dir=tmp_path)
        )


def test_a_data_file_is_capped_like_a_network_sources_answer(tmp_path: Path) -> None:
    """Any request may name a file of the data folder: the same size and depth limits apply."""
    (tmp_path / "big.json").write_text(json.dumps({"rows": ["x" * 100] * 20}))
    with pytest.raises(PermanentError, match=r"big.json' is 2,\d{3} bytes, over the 1,000"):
        asyncio.run(
            fetch(
                {"name": "big", "kind": "file", "path": "big.json"},
                data_files_dir=tmp_path,
                fetch_max_bytes=1000,
            )
        )
    (tmp_path / "deep.json").write_text("[" * 100 + "]" * 100)
    with pytest.raises(PermanentError, match=r"'deep\.json' is nested deeper than 64 levels"):
        asyncio.run(
            fetch({"name": "deep", "kind": "file", "path": "deep.json"}, data_files_dir=tmp_path)
        )


def test_pressroom_sources_test_checks_a_configured_source(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    import subprocess

    from tests import cliproc
    from tests.helpers import REPO

    config = tmp_path / "pressroom.yaml"
    config.write_text(
        "sources:\n"
        f"  uptime:\n    kind: prometheus\n    url: {prometheus.url}\n    query: up\n"
        f"  broken:\n    kind: http\n    url: http://127.0.0.1:{closed_port()}/x\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PRESSROOM_CONFIG": str(config)}

    def pressroom(*args: str) -> subprocess.CompletedProcess[str]:
        return cliproc.run(args, env=env, timeout=60)

    listed = json.loads(pressroom("sources", "ls", "--json").stdout)
    assert listed == [{"name": "broken", "kind": "http"}, {"name": "uptime", "kind": "prometheus"}]
    ok = pressroom("sources", "test", "uptime")
    assert ok.returncode == 0 and ok.stdout.startswith("ok: uptime (prometheus)")
    bad = pressroom("sources", "test", "broken")
    assert bad.returncode == 1 and "source 'broken'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
