"""The event contract for other systems: JSON Schemas of every event and the AsyncAPI document.

`python -m shared.contract` (or `make contract`) writes them under docs/; a test checks that the
committed files match the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.events import DLQ_PREFIX, EVENT_MODELS, SCHEMA_VERSION, DeadLetter

DOCS = Path(__file__).resolve().parent.parent / "docs"


def event_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per subject (dead letters under `dlq.>`)."""
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS, f"{DLQ_PREFIX}>": DeadLetter}
    schemas = {}
    for subject, model in models.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://pressroom.dev/schemas/v{SCHEMA_VERSION}/{subject}.json"
        schema["x-subject"] = subject
        schemas[subject] = schema
    return schemas


def asyncapi() -> dict[str, Any]:
    """FastStream's AsyncAPI 3.0 document for the three services, with our payload schemas."""
    from faststream.specification import AsyncAPI

    from services.distributor.app import create_app as distributor
    from services.fetcher.app import create_app as fetcher
    from services.renderer.app import create_app as renderer
    from shared.settings import Settings

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
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS}
    for name, message in doc["components"].get("messages", {}).items():
        subject = name.split(":", 1)[0]
        model = models.get(subject) or (DeadLetter if subject.startswith(DLQ_PREFIX) else None)
        if model is None:
            continue
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[def_name] = definition
        schemas[model.__name__] = schema
        message["payload"] = {"$ref": f"#/components/schemas/{model.__name__}"}
    schemas.pop("EmptyPayload", None)
    return doc


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
