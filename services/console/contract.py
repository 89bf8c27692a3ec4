"""The event contract for other systems: JSON Schemas of every event and the AsyncAPI document.

`python -m services.console.contract` (or `make contract`) writes them under docs/; a test checks
that the
committed files match the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.specification import AsyncAPI
from pydantic import BaseModel

from services.distributor.app import create_app as distributor
from services.fetcher.app import create_app as fetcher
from services.renderer.app import create_app as renderer
from shared.events import DLQ_PREFIX, EVENT_MODELS, SCHEMA_VERSION, DeadLetter, unlaned
from shared.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


# What each channel reads from its `deliver` entry (the model keeps them as extra keys; the
# channels in services/distributor/channels/ read them): described here so the schema says it.
_TEXT = {"type": "string", "minLength": 1}
DELIVERY_FIELDS: dict[str, dict[str, Any]] = {
    "to": {
        "description": "email: recipient address, or a list of them (at most 50).",
        "oneOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1}],
    },
    "cc": {
        "description": "email: copy recipients, as `to`.",
        "oneOf": [_TEXT, {"type": "array", "items": _TEXT}],
    },
    "subject": {
        "type": "string",
        "description": "email: subject line pattern (one line), e.g. "
        "`Report {template} ({request_id})`.",
    },
    "body": {"type": "string", "description": "email: plain-text body pattern."},
    "path": {
        "type": "string",
        "description": "file: folder under PRESSROOM_OUT_DIR (absolute only when "
        "PRESSROOM_FILE_ALLOW_ABSOLUTE=true); default the folder itself.",
    },
    "bucket": {"type": "string", "minLength": 1, "description": "s3: existing bucket name."},
    "key": {
        "type": "string",
        "description": "s3: object key pattern (placeholders date, template, request_id, "
        "ext, filename), e.g. `reports/{date}/{filename}`; default "
        "`{date}/{template}/{request_id}.{ext}`.",
    },
    "url": {
        "type": "string",
        "format": "uri",
        "description": "webhook: http(s) URL receiving a Standard Webhooks signed POST.",
    },
}
DELIVERY_REQUIRED = {"email": ["to"], "s3": ["bucket"], "webhook": ["url"], "file": []}


def describe_deliveries(definitions: dict[str, Any]) -> None:
    """The per-channel keys of a `Delivery` (in a schema's definitions), and which it needs."""
    delivery = definitions.get("Delivery")
    if delivery is None:
        return
    delivery.setdefault("properties", {}).update(DELIVERY_FIELDS)
    delivery["allOf"] = [
        {
            "if": {"properties": {"channel": {"const": channel}}, "required": ["channel"]},
            "then": {"required": required},
        }
        for channel, required in DELIVERY_REQUIRED.items()
        if required
    ]


def event_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per subject (dead letters under `dlq.>`)."""
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS, f"{DLQ_PREFIX}>": DeadLetter}
    schemas = {}
    for subject, model in models.items():
        schema = model.model_json_schema()
        describe_deliveries(schema.get("$defs", {}))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://pressroom.dev/schemas/v{SCHEMA_VERSION}/{subject}.json"
        schema["x-subject"] = subject
        schemas[subject] = schema
    return schemas


def asyncapi() -> dict[str, Any]:
    """FastStream's AsyncAPI 3.0 document for the three services, with our payload schemas."""

    settings = Settings(nats_url="nats://nats:4222")
    brokers = [app.broker for app in (c(settings) for c in (fetcher, renderer, distributor))]
    assert all(b is not None for b in brokers)
    doc: dict[str, Any] = (
        AsyncAPI(
            *[b for b in brokers if b is not None],
            title="Pressroom",
            version=f"{SCHEMA_VERSION}.0.0",
            description="Event-driven report pipeline. Publish report.requested; receive "
            "report.delivered or report.failed. Payloads are JSON; see docs/schemas/.",
        )
        .to_specification()
        .to_jsonable()
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["MessageHeaders"] = HEADERS
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS}
    for name, message in doc["components"].get("messages", {}).items():
        subject = unlaned(name.split(":", 1)[0])  # a lane's subject carries its stage's event
        model = models.get(subject) or (DeadLetter if subject.startswith(DLQ_PREFIX) else None)
        if model is None:
            continue
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[def_name] = definition
        schemas[model.__name__] = schema
        message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
        # What is on the wire: no event carries a correlation_id header (FastStream's default);
        # the request id in the payload correlates, and these headers travel with each message.
        message["headers"] = {"$ref": "#/components/schemas/MessageHeaders"}
        message.pop("correlationId", None)
        if "request_id" in model.model_fields:
            message["correlationId"] = {"location": "$message.payload#/request_id"}
        elif "request" in model.model_fields:
            message["correlationId"] = {"location": "$message.payload#/request/request_id"}
    describe_deliveries(schemas)
    # FastStream's stand-ins for the handlers' argument (the message itself, schema-less): each
    # message's payload is one of our models above.
    for name in [n for n in schemas if n == "EmptyPayload" or n.endswith(":Message:Payload")]:
        schemas.pop(name)
    return doc


HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "NATS headers of every Pressroom message. Other headers a publisher of "
    "report.requested sets are kept (a dead letter records them, without the Nats-* ones).",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "description": "JetStream de-duplication id (within the stream's duplicate window "
            "a second message with the same id is dropped). Pressroom sends "
            "`<request_id>:<stage>` for what a stage publishes, `failed:<stage>:<seq>` for "
            "report.failed, `dlq:<stage>:<seq>` for dead letters, one id per schedule fire; "
            "a publisher of report.requested should send one (e.g. the request_id).",
        },
        "traceparent": {
            "type": "string",
            "description": "W3C Trace Context of the PRODUCER span that sent the message "
            "(`send <subject>`), present when tracing is on (OTEL_* settings).",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        },
        "tracestate": {"type": "string", "description": "W3C Trace Context vendor state."},
    },
}


def rendered() -> dict[Path, str]:
    files = {
        DOCS / "schemas" / f"{subject.rstrip('.>')}.json": json.dumps(
            schema, indent=2, sort_keys=True
        )
        + "\n"
        for subject, schema in event_schemas().items()
    }
    files[DOCS / "asyncapi.json"] = json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n"
    return files


def main() -> None:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(DOCS.parent)}")


if __name__ == "__main__":
    main()
