"""The data-source contract (services/fetcher/sources DataSource): every kind that calls an API
(http, prometheus, github, jira) against a real HTTP server on loopback — its answer becomes the
source's data; no answer in time, 429 and 5xx are TransientError; 4xx is PermanentError; an
answer over PRESSROOM_FETCH_MAX_BYTES is refused — each naming the source. The `file` kind reads
the operator's data folder: no network, so it has only the path rules."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.fetcher.sources import default_sources
from shared.errors import PermanentError, TransientError
from shared.events import Source
from shared.settings import Settings
from tests.contract.conftest import Api
from tests.servers import PrometheusServer

pytestmark = pytest.mark.integration

EXPECTED: dict[str, Any] = {
    "http": {"open": 3},
    "prometheus": [{"metric": {"job": "x"}, "value": [1, "1"]}],
    "github": [{"number": 7, "title": "Fix the thing"}],
    "jira": [{"key": "OPS-1"}],
}


def settings(**overrides: Any) -> Settings:
    # The operator allows the loopback test server as a request-supplied source URL. The
    # deadline is a bound for a failure only (a server that answers, answers long before it,
    # however busy the machine); the test of no answer in time gives its own.
    values: dict[str, Any] = {"fetch_timeout": 60.0, "source_allow": "127.0.0.1"}
    return Settings(**{**values, **overrides})


async def fetch(spec: dict[str, Any], **overrides: Any) -> Any:
    source = Source.model_validate(spec)
    return await default_sources()[source.kind].fetch(source, settings(**overrides))


async def test_the_apis_answer_becomes_the_sources_data(api: Api) -> None:
    assert await fetch(api.source("inv")) == EXPECTED[api.kind]
    assert api.receiver.hits, "the source asked the server"


async def test_no_answer_in_time_is_transient_and_names_the_source(api: Api) -> None:
    api.answer = "hang"
    with pytest.raises(TransientError, match=r"0\.5s") as caught:  # the timeout it gave up at
        await fetch(api.source("inv"), fetch_timeout=0.5)
    assert "'inv'" in caught.value.reason


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_a_4xx_answer_is_permanent_and_names_the_source(api: Api, status: int) -> None:
    api.answer = status
    with pytest.raises(PermanentError, match=str(status)) as caught:
        await fetch(api.source("inv"))
    assert "'inv'" in caught.value.reason


@pytest.mark.parametrize("status", [429, 502, 503])
async def test_busy_or_failing_servers_are_transient(api: Api, status: int) -> None:
    api.answer = status
    with pytest.raises(TransientError, match=str(status)) as caught:
        await fetch(api.source("inv"))
    assert "'inv'" in caught.value.reason


async def test_an_answer_over_the_size_cap_is_refused(api: Api) -> None:
    api.answer = "huge"
    with pytest.raises(PermanentError, match="PRESSROOM_FETCH_MAX_BYTES") as caught:
        await fetch(api.source("inv"), fetch_max_bytes=50_000)
    assert "'inv'" in caught.value.reason
    assert await fetch(api.source("inv"), fetch_max_bytes=1_000_000) is not None  # same answer


async def test_a_refused_connection_is_transient(api: Api) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = int(sock.getsockname()[1])
    spec = api.source("inv")
    for key in ("url", "api_url"):
        if key in spec:
            spec[key] = spec[key].replace(f":{api.receiver.port}", f":{closed}")
    with pytest.raises(TransientError, match="cannot reach") as caught:
        await fetch(spec)
    assert "'inv'" in caught.value.reason


# ---- prometheus against the real thing -------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    yield server
    server.stop()


async def test_a_real_prometheus_answers_with_its_vector(prometheus: PrometheusServer) -> None:
    result = await fetch({"name": "up", "kind": "prometheus", "url": prometheus.url, "query": "up"})
    assert [r["metric"]["job"] for r in result] == ["prometheus"]
    with pytest.raises(PermanentError, match=r"source 'bad'"):
        await fetch({"name": "bad", "kind": "prometheus", "url": prometheus.url, "query": "sum(("})


# ---- file: the operator's data folder ----------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "data"),
    [
        ("open.json", '{"open": 3}', {"open": 3}),
        ("open.yaml", "open: 3\n", {"open": 3}),
        ("open.csv", "team,open\ncore,3\n", [{"team": "core", "open": "3"}]),
    ],
)
async def test_a_data_file_becomes_the_sources_data(
    tmp_path: Path, name: str, text: str, data: Any
) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / name).write_text(text)
    spec = {"name": "inv", "kind": "file", "path": f"teams/{name}"}
    assert await fetch(spec, data_files_dir=tmp_path) == data


@pytest.mark.parametrize("path", ["missing.json", "../outside.json", "/etc/hostname", ""])
async def test_a_file_not_in_the_data_folder_is_permanent(tmp_path: Path, path: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "outside.json").write_text("{}")
    with pytest.raises(PermanentError, match="data folder") as caught:
        await fetch({"name": "inv", "kind": "file", "path": path}, data_files_dir=tmp_path / "data")
    assert "'inv'" in caught.value.reason


async def test_a_data_file_that_does_not_parse_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(PermanentError, match=r"cannot parse 'broken\.json'"):
        await fetch({"name": "inv", "kind": "file", "path": "broken.json"}, data_files_dir=tmp_path)
