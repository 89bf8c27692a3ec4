"""Structural checks of archival and accessible PDFs, with pikepdf (no veraPDF here)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pikepdf


def open_pdf(data: bytes) -> pikepdf.Pdf:
    return pikepdf.open(io.BytesIO(data))


def pdfa_identification(pdf: pikepdf.Pdf) -> tuple[str | None, str | None]:
    """XMP pdfaid:part and pdfaid:conformance."""
    with pdf.open_metadata() as meta:
        return meta.get("pdfaid:part"), meta.get("pdfaid:conformance")


def xmp(pdf: pikepdf.Pdf, *keys: str) -> dict[str, Any]:
    """XMP values by prefixed name (`dc:title`)."""
    with pdf.open_metadata() as meta:
        return {key: meta.get(key) for key in keys}


def output_intents(pdf: pikepdf.Pdf) -> list[tuple[str, str, int]]:
    """(subtype, condition, ICC components) of each output intent."""
    found = []
    for intent in pdf.Root.get("/OutputIntents", []):
        profile = intent.DestOutputProfile
        found.append((str(intent.S), str(intent.OutputConditionIdentifier), int(profile.N)))
    return found


def fonts(pdf: pikepdf.Pdf) -> Iterator[tuple[str, bool]]:
    """Every font the pages use, and whether its program is embedded."""
    seen: set[tuple[int, int]] = set()
    for page in pdf.pages:
        for font in (page.Resources.get("/Font") or {}).values():
            if font.objgen in seen:
                continue
            seen.add(font.objgen)
            descendants = font.get("/DescendantFonts")
            descriptor = (descendants[0] if descendants else font).get("/FontDescriptor")
            embedded = descriptor is not None and any(
                key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3")
            )
            yield str(font.get("/BaseFont")), embedded


def attachment(pdf: pikepdf.Pdf, name: str) -> tuple[bytes, str, list[str]]:
    """An embedded file's bytes, its AFRelationship, and the names in the catalog's /AF."""
    spec = pdf.attachments[name]
    relationship = str(spec.obj.get("/AFRelationship"))
    listed = [str(f.get("/F")) for f in pdf.Root.get("/AF", [])]
    return spec.get_file().read_bytes(), relationship, listed


def provenance(pdf: pikepdf.Pdf) -> dict[str, Any]:
    data, _, _ = attachment(pdf, "pressroom.json")
    return dict(json.loads(data))


def structure(pdf: pikepdf.Pdf) -> list[tuple[str, pikepdf.Dictionary]]:
    """Every element of the structure tree, in reading order: (tag, element)."""
    found: list[tuple[str, pikepdf.Dictionary]] = []

    def walk(node: Any) -> None:
        if isinstance(node, pikepdf.Array):
            for item in node:
                walk(item)
            return
        if not isinstance(node, pikepdf.Dictionary) or "/S" not in node:
            return
        found.append((str(node.S)[1:], node))
        walk(node.get("/K"))

    root = pdf.Root.StructTreeRoot
    walk(root.get("/K"))
    return found


def text_of(element: pikepdf.Dictionary) -> str:
    return str(element.get("/Alt", ""))
