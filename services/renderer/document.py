"""The PDF as a document: its standard (PDF/A, PDF/UA), tags, metadata, /ID and provenance.

What a PDF is comes from four places, each over the one before: the operator's defaults
(PRESSROOM_PDF_VARIANT, PRESSROOM_PDF_TAGGED, PRESSROOM_PDF_AUTHOR), the template's front matter
(`pdf:` with `variant`, `tagged`, `metadata`), the schedule's or request's `pdf` object, and
last the operator's requirements (PRESSROOM_PDF_REQUIRE), which a request may not turn off: a
request asking otherwise is refused with the reason.

Every PDF is deterministic: its dates are the request's `requested_at`, its /ID a digest of the
request id, template version and data, so the same request renders to the same bytes.
The service builds a DocumentSpec (what it knows: the request, the data's digest, the trace);
the render process resolves it against the template (`resolve`) and writes the PDF with it
(`write_options`): WeasyPrint's own pdf_variant, pdf_tags, pdf_identifier and attachments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from types import SimpleNamespace
from typing import Any

import pydyf  # WeasyPrint's PDF writer (small): the finisher edits its objects

from shared.errors import PermanentError

VARIANTS = ("pdf/a-3b", "pdf/a-2b", "pdf/ua-1")
PDFA = ("pdf/a-3b", "pdf/a-2b")
PROVENANCE_NAME = "pressroom.json"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ISO 32000-2 7.11.3: supplementary information about the document (where it came from).
PROVENANCE_RELATIONSHIP = "Supplement"


@dataclass(frozen=True)
class DocumentSpec:
    """What the service knows of the document; resolved against the template when rendering."""

    given: Mapping[str, Any] = field(default_factory=dict)  # the request's `pdf` keys it set
    default_variant: str = ""
    default_tagged: bool = False
    require: tuple[str, ...] = ()
    author: str = "Pressroom"
    creator: str = "Pressroom"
    created: str = ""  # W3C date-time: the request's requested_at
    request_id: str = ""
    data_hash: str = ""
    locale: str | None = None
    # Where the report came from, without the template (the render process adds it).
    provenance: Mapping[str, Any] = field(default_factory=dict)
    # The request asks for encryption (a `password`): PDF/A forbids it.
    encrypted: bool = False
    csv_bom: bool = False


@dataclass(frozen=True)
class Resolved:
    """The document a render writes."""

    variant: str | None
    tagged: bool
    author: str
    subject: str | None
    keywords: tuple[str, ...]

    @property
    def one_piece(self) -> bool:
        """A standard or a structure tree is written for the whole document at once: such a
        report is never split (services/renderer/split.py)."""
        return bool(self.variant or self.tagged)


# What a template's front matter `pdf:` may hold: the document's own keys (checked here) and
# the finishing defaults (watermark …, checked by services/renderer/finish.py's options).
DOCUMENT_KEYS = ("variant", "tagged", "metadata")
FINISHING_KEYS = ("watermark", "permissions", "sign", "append")


def template_pdf(front: Mapping[str, Any], template: str) -> dict[str, Any]:
    """The template's own `pdf:` front matter, checked (`pressroom templates validate` too)."""
    pdf = front.get("pdf") or {}
    if not isinstance(pdf, dict):
        raise PermanentError(f"template '{template}': front matter `pdf` must be a mapping")
    unknown = sorted(set(pdf) - set(DOCUMENT_KEYS) - set(FINISHING_KEYS))
    if unknown:
        raise PermanentError(
            f"template '{template}': unknown front matter key pdf.{unknown[0]} "
            f"(known: {', '.join((*DOCUMENT_KEYS, *FINISHING_KEYS))})"
        )
    variant = pdf.get("variant")
    if variant is not None and variant not in VARIANTS:
        raise PermanentError(
            f"template '{template}': unknown pdf.variant '{variant}' (known: {', '.join(VARIANTS)})"
        )
    if "tagged" in pdf and not isinstance(pdf["tagged"], bool):
        raise PermanentError(f"template '{template}': pdf.tagged must be true or false")
    metadata = pdf.get("metadata") or {}
    if not isinstance(metadata, dict) or set(metadata) - {"author", "subject", "keywords"}:
        raise PermanentError(
            f"template '{template}': pdf.metadata is a mapping of author, subject, keywords"
        )
    return pdf


def resolve(spec: DocumentSpec, front: Mapping[str, Any], template: str) -> Resolved:
    """Operator defaults < template front matter < request < operator requirements."""
    chosen: dict[str, Any] = {"variant": spec.default_variant or None}
    chosen["tagged"] = spec.default_tagged
    meta: dict[str, Any] = {}
    for layer in (template_pdf(front, template), spec.given):
        for key in ("variant", "tagged"):
            if key in layer:
                chosen[key] = layer[key]
        meta.update({k: v for k, v in (layer.get("metadata") or {}).items() if v is not None})
    asked = spec.given
    for required in spec.require:
        if required == "tagged":
            if asked.get("tagged") is False:
                raise PermanentError(
                    "untagged PDF refused: the operator requires every PDF to be tagged "
                    "(PRESSROOM_PDF_REQUIRE)"
                )
            chosen["tagged"] = True
        else:
            if "variant" in asked and asked["variant"] != required:
                raise PermanentError(
                    f"pdf variant '{asked['variant'] or 'none'}' refused: the operator requires "
                    f"every PDF to be {required} (PRESSROOM_PDF_REQUIRE)"
                )
            chosen["variant"] = required
    variant = chosen["variant"]
    if variant == "pdf/ua-1":
        if asked.get("tagged") is False:
            raise PermanentError("pdf/ua-1 refused with tagged: false (PDF/UA is tagged PDF)")
        chosen["tagged"] = True
    if variant in PDFA and spec.encrypted:
        if asked.get("variant") == variant or variant in spec.require:
            raise PermanentError(
                f"{variant} refused with a password or permissions: PDF/A forbids encryption"
            )
        # A default (the template's or the operator's) gives way to the request's protection:
        # the report is a plain (still tagged, if so) PDF, encrypted.
        variant = None
    keywords = meta.get("keywords") or ()
    if isinstance(keywords, str):
        keywords = [k.strip() for k in keywords.split(",") if k.strip()]
    return Resolved(
        variant=variant,
        tagged=bool(chosen["tagged"]),
        author=str(meta.get("author") or spec.author),
        subject=str(meta["subject"]) if meta.get("subject") else None,
        keywords=tuple(str(k) for k in keywords),
    )


def identifier(spec: DocumentSpec, template_version: str) -> str:
    """The PDF's /ID: the same request, template version and data, the same id."""
    seed = f"{spec.request_id}\n{template_version}\n{spec.data_hash}".encode()
    return hashlib.sha256(seed).hexdigest()[:32]


def renderer_version() -> str:
    return f"pressroom {package_version('pressroom')}, weasyprint {package_version('weasyprint')}"


def provenance(spec: DocumentSpec, template: str, template_version: str) -> bytes:
    """pressroom.json: where this report came from, as canonical JSON."""
    record = {
        **spec.provenance,
        "template": {"name": template, "content_hash": template_version},
        "data_hash": spec.data_hash,
        "renderer": renderer_version(),
    }
    return json.dumps(record, sort_keys=True, indent=1, ensure_ascii=False).encode()


def created_of(spec: DocumentSpec) -> datetime | None:
    """The document's date (the request's requested_at), when the service gave one."""
    return datetime.fromisoformat(spec.created) if spec.created else None


def write_options(
    resolved: Resolved,
    spec: DocumentSpec,
    template: str,
    template_version: str,
    fetcher: Any,
) -> tuple[dict[str, Any], Callable[[Any, Any], None]]:
    """WeasyPrint's write_pdf options for the document, and its finisher (XMP for every PDF:
    WeasyPrint writes one only for PDF/A and PDF/UA)."""
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint import Attachment

    options: dict[str, Any] = {
        "pdf_variant": resolved.variant,
        "pdf_tags": resolved.tagged,
        "pdf_identifier": identifier(spec, template_version).encode(),
    }
    if resolved.variant == "pdf/a-3b":
        # Never the clock: without a request date (a job built without one), the epoch.
        when = created_of(spec) or EPOCH
        options["attachments"] = [
            Attachment(
                string=provenance(spec, template, template_version).decode(),
                url_fetcher=fetcher,  # never used for a string, but never the default one
                name=PROVENANCE_NAME,
                description="Where this report came from (Pressroom provenance)",
                created=when,
                modified=when,
                relationship=PROVENANCE_RELATIONSHIP,
            )
        ]

    def finish(document: Any, pdf: Any) -> None:
        if resolved.variant is None and "Metadata" not in pdf.catalog:
            document.metadata.include_in_pdf(pdf, "a", None, None, compress=True)
        if "AF" in pdf.catalog:
            # WeasyPrint 70 lists each attachment twice in /AF (from the name tree and from
            # the file specifications): once is what PDF/A-3 means.
            pdf.catalog["AF"] = pydyf.Array(dict.fromkeys(pdf.catalog["AF"]))

    return options, finish


def apply_metadata(document: Any, resolved: Resolved, spec: DocumentSpec, template: str) -> None:
    """The document's title, author, subject, keywords, creator, dates and language."""
    metadata = document.metadata
    if not metadata.title:
        metadata.title = template.rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("_", " ")
    if not metadata.authors or resolved.author != spec.author:
        metadata.authors = [resolved.author]
    if resolved.subject:
        metadata.description = resolved.subject
    if resolved.keywords:
        metadata.keywords = list(resolved.keywords)
    metadata.generator = spec.creator
    if spec.created:
        metadata.created = metadata.modified = spec.created
    if not metadata.lang:
        metadata.lang = (spec.locale or "en").replace("_", "-")


def finish_merged(
    writer: Any,
    title: str | None,
    lang: str | None,
    resolved: Resolved,
    spec: DocumentSpec,
    template: str,
    template_version: str,
) -> None:
    """A split report's merged PDF (pypdf) gets what `write_options` gives a one-piece one:
    the same info dictionary, XMP and /ID. (Split reports are never PDF/A or tagged.)"""
    # Imported here: heavy (pypdf, WeasyPrint): only a split report's merge process needs them.
    from pypdf.generic import ArrayObject, ByteStringObject, NameObject, StreamObject
    from weasyprint.pdf import _w3c_date_to_pdf  # the same date format as one-piece PDFs
    from weasyprint.pdf.metadata import DocumentMetadata

    metadata = DocumentMetadata(title=title, lang=lang)
    apply_metadata(SimpleNamespace(metadata=metadata), resolved, spec, template)
    info: dict[str, str] = {"/Title": metadata.title or "", "/Creator": metadata.generator or ""}
    info["/Author"] = ", ".join(metadata.authors)
    if metadata.description:
        info["/Subject"] = metadata.description
    if metadata.keywords:
        info["/Keywords"] = ", ".join(metadata.keywords)
    if metadata.created:
        info["/CreationDate"] = info["/ModDate"] = _w3c_date_to_pdf(metadata.created, "created")
    writer.add_metadata(info)
    packet = b"".join(
        (
            b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>\n',
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/">',
            metadata.generate_rdf_metadata("a", None, None),
            b'</x:xmpmeta>\n<?xpacket end="r"?>',
        )
    )
    stream = StreamObject()
    stream.set_data(packet)
    stream[NameObject("/Type")] = NameObject("/Metadata")
    stream[NameObject("/Subtype")] = NameObject("/XML")
    writer._root_object[NameObject("/Metadata")] = writer._add_object(stream)
    ident = ByteStringObject(identifier(spec, template_version).encode())
    writer._ID = ArrayObject([ident, ident])
