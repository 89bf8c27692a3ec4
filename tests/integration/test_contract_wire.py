"""The published contract says what is on the wire, checked with the tools another team uses:
the official AsyncAPI parser (npm @asyncapi/parser, `make test-deps`) reads docs/asyncapi.json,
and every message of a real run — delivered, dead-lettered, failed — matches docs/schemas and
carries the headers the document describes."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.bus.names import DLQ_STREAM, STREAM
from tests.helpers import REPO, Outcomes, Stack, unique
from tests.servers import HttpReceiver, SmtpServer

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
CHECK = REPO / "tests/tools/asyncapi_check.cjs"
PARSER = REPO / ".npm-tools/node_modules/@asyncapi/parser"
SECRET = "whsec_" + base64.b64encode(b"pressroom-contract-secret-012345").decode()
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def official_parse(path: Any) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not PARSER.is_dir():
        raise RuntimeError("node or @asyncapi/parser is missing: `make test-deps` installs them")
    done = subprocess.run(
        [node, str(CHECK), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_official_asyncapi_parser_reads_the_document_as_the_wire_is() -> None:
    found = official_parse(REPO / "docs/asyncapi.json")
    assert found["parsed"], found["diagnostics"]
    # severity 0 error, 1 warning (2 info, 3 hint: e.g. "3.1.0 exists" is info)
    assert [d for d in found["diagnostics"] if d["severity"] <= 1] == []
    assert {"report.requested", "data.ready", "report.delivered", "report.failed"} <= set(
        found["channels"]
    )
    for title, message in found["messages"].items():
        assert {"Nats-Msg-Id", "traceparent"} <= set(message["headers"]), title
        # correlated by the request id in the payload: no header that no event carries
        assert message["correlation"] in (
            "$message.payload#/request_id",
            "$message.payload#/request/request_id",
        ), title
    doc = json.loads((REPO / "docs/asyncapi.json").read_text())
    delivery = doc["components"]["schemas"]["Delivery"]["properties"]
    assert {"to", "subject", "url", "path", "bucket", "key"} <= set(delivery)
    assert all(delivery[k].get("description") for k in ("to", "subject", "url", "path"))


def test_the_parser_rejects_a_broken_document(tmp_path: Any) -> None:
    """The check above can fail: a message pointing at a schema that does not exist."""
    doc = json.loads((REPO / "docs/asyncapi.json").read_text())
    message = next(iter(doc["components"]["messages"].values()))
    message["payload"] = {"$ref": "#/components/schemas/NoSuchThing"}
    broken = tmp_path / "asyncapi.json"
    broken.write_text(json.dumps(doc))
    found = official_parse(broken)
    assert any(d["severity"] == 0 for d in found["diagnostics"])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SmtpServer, HttpReceiver]]:
    smtp, hooks = SmtpServer().start(), HttpReceiver().start()
    yield smtp, hooks
    hooks.stop()
    smtp.stop()


@pytest.fixture(scope="module")
def wired(
    tmp_path_factory: pytest.TempPathFactory, servers: tuple[SmtpServer, HttpReceiver]
) -> Iterator[Stack]:
    smtp, hooks = servers
    stack = Stack(
        tmp_path_factory.mktemp("wire"),
        env_extra={
            **smtp.env(),
            "PRESSROOM_WEBHOOK_SECRET": SECRET,
            "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
            # tracing on, so every message Pressroom publishes carries its traceparent
            "OTEL_EXPORTER_OTLP_ENDPOINT": hooks.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
        },
    ).start()
    yield stack
    stack.stop()


def schema_for(subject: str) -> Draft202012Validator:
    name = "dlq" if subject.startswith("dlq.") else subject
    return Draft202012Validator(json.loads((REPO / f"docs/schemas/{name}.json").read_text()))


async def test_every_message_of_a_run_matches_the_schemas_and_documented_headers(
    wired: Stack, servers: tuple[SmtpServer, HttpReceiver]
) -> None:
    _, hooks = servers
    ok, bad = unique("wire"), unique("wire-bad")
    bodies = [
        {
            "request_id": ok,
            "template": "weekly.html",
            "params": SAMPLE,
            "formats": ["pdf", "html"],
            "deliver": [
                {"channel": "file", "path": "wire"},
                {"channel": "email", "to": ["ops@example.com"], "subject": "Weekly {request_id}"},
                {"channel": "webhook", "url": f"{hooks.url}/hook/{ok}"},
            ],
        },
        {"request_id": bad, "template": "weekly.html"},  # dead-lettered at render
    ]
    nc = await wired.connect()
    outcomes = await Outcomes().start(nc)
    js = nc.jetstream()
    for body in bodies:
        await js.publish(
            "report.requested",
            json.dumps(body).encode(),
            headers={"Nats-Msg-Id": f"req:{body['request_id']}"},
        )
    await outcomes.delivered_event(ok)
    await outcomes.failed_event(bad)

    documented = set(
        json.loads((REPO / "docs/asyncapi.json").read_text())["components"]["schemas"][
            "MessageHeaders"
        ]["properties"]
    )
    seen: dict[str, int] = {}
    for stream in (STREAM, DLQ_STREAM):
        info = await js.stream_info(stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            stored = await js.get_msg(stream, seq)
            payload = json.loads(stored.data or b"{}")
            ours = json.dumps(payload).find(ok) >= 0 or json.dumps(payload).find(bad) >= 0
            if not ours:
                continue
            errors = [e.message for e in schema_for(stored.subject).iter_errors(payload)]
            assert errors == [], (stored.subject, errors)
            headers = dict(stored.headers or {})
            assert headers.get("Nats-Msg-Id"), (stored.subject, headers)
            if stored.subject != "report.requested":  # published by Pressroom itself
                assert set(headers) <= documented, (stored.subject, headers)
                assert TRACEPARENT.match(headers["traceparent"]), headers
            seen[stored.subject] = seen.get(stored.subject, 0) + 1
    await nc.close()
    assert {
        "report.requested",
        "data.ready",
        "report.rendered",
        "report.delivered",
        "report.failed",
        "dlq.data.ready",
    } <= set(seen), seen
