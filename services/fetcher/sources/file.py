"""`file` sources: JSON, YAML or CSV from the configured data folder (never outside it)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from shared import jsonsafe
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings


def load_data_file(path: Path, *, what: str | None = None) -> Any:
    """A data file's content; `what` names it in errors, and JSON is then read as untrusted
    (nested no deeper than a source's answer may be)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        return yaml.safe_load(text)
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    if what and jsonsafe.deeper_than(text.encode(), jsonsafe.MAX_DEPTH):
        raise PermanentError(f"{what} is nested deeper than {jsonsafe.MAX_DEPTH} levels")
    return json.loads(text)


class FileSource:
    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        rel = str((source.model_extra or {}).get("path", ""))
        root = settings.data_files_dir.resolve()
        path = (root / rel).resolve()
        if not rel or not path.is_relative_to(root):
            raise PermanentError(
                f"source '{source.name}': path must be inside the data folder "
                "(PRESSROOM_DATA_FILES_DIR)"
            )
        if not path.is_file():
            raise PermanentError(
                f"source '{source.name}': no file '{rel}' in the data folder "
                "(PRESSROOM_DATA_FILES_DIR)"
            )
        size = path.stat().st_size
        if size > settings.fetch_max_bytes:  # as a network source's answer is capped
            raise PermanentError(
                f"source '{source.name}': '{rel}' is {size:,} bytes, over the "
                f"{settings.fetch_max_bytes:,} a source may give (PRESSROOM_FETCH_MAX_BYTES)"
            )
        try:
            return load_data_file(path, what=f"source '{source.name}': '{rel}'")
        except (ValueError, yaml.YAMLError, csv.Error) as error:
            raise PermanentError(f"source '{source.name}': cannot parse '{rel}': {error}") from None
