"""Every message on the bus, defined once: subjects, payload models and their schema version."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from shared.urls import mask_url_secrets

SCHEMA_VERSION = 1

REPORT_REQUESTED = "report.requested"
DATA_READY = "data.ready"
REPORT_RENDERED = "report.rendered"
REPORT_DELIVERED = "report.delivered"
REPORT_FAILED = "report.failed"
DLQ_PREFIX = "dlq."

PIPELINE_SUBJECTS = (REPORT_REQUESTED, DATA_READY, REPORT_RENDERED, REPORT_DELIVERED, REPORT_FAILED)
# A tenant's `report.requested` reaches the services' account as `report.requested.<tenant>`
# (its account's import says so; see shared/bus/identity.py): the subject names who published.
TENANT_REQUESTS = f"{REPORT_REQUESTED}.*"


def tenant_lane_requests(lane: str) -> str:
    """A tenant's `report.requested.<lane>` as the services' account sees it."""
    return f"{REPORT_REQUESTED}.*.{lane}"


# Lanes: `interactive` and `bulk` work of a stage travel on their own subjects, read by their own
# durable consumers (shared/lanes.py); `normal` stays on the plain subject.
LANE_PREFIX = "lane."
LANED_SUBJECTS = (REPORT_REQUESTED, DATA_READY, REPORT_RENDERED)
LANES = ("interactive", "bulk")


def lane_subject(subject: str, lane: str) -> str:
    """Where `subject`'s work of `lane` travels: `lane.bulk.data.ready`; normal: `data.ready`."""
    if lane == "normal" or subject not in LANED_SUBJECTS:
        return subject
    return f"{LANE_PREFIX}{lane}.{subject}"


def lane_of_subject(subject: str) -> str:
    """The lane a message's subject puts it in: `lane.<lane>.…` or a tenant's
    `report.requested.<tenant>.<lane>`; else normal."""
    if subject.startswith(LANE_PREFIX):
        return subject[len(LANE_PREFIX) :].partition(".")[0]
    parts = subject.split(".")
    if len(parts) == 4 and subject.startswith(f"{REPORT_REQUESTED}.") and parts[3] in LANES:
        return parts[3]
    return "normal"


def unlaned(subject: str) -> str:
    """The pipeline subject of a lane subject (`lane.bulk.data.ready` → `data.ready`)."""
    if subject.startswith(LANE_PREFIX):
        return subject[len(LANE_PREFIX) :].partition(".")[2]
    if tenant_of_subject(subject) is not None:
        return REPORT_REQUESTED
    return subject


def is_lane_subject(subject: str) -> bool:
    return subject.startswith(LANE_PREFIX)


# A tenant's name is a NATS subject token and part of an account name: short and plain.
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def tenant_of_subject(subject: str) -> str | None:
    """The calling system that published a `report.requested.<tenant>` message (or, asking
    for a lane, `report.requested.<tenant>.<lane>`), else None."""
    prefix = f"{REPORT_REQUESTED}."
    if not subject.startswith(prefix):
        return None
    tenant, _, lane = subject[len(prefix) :].partition(".")
    if not tenant or (lane and lane not in LANES):
        return None
    return tenant


def request_message_id(body: bytes, request_id: str) -> str:
    """The documented Nats-Msg-Id of a published request: its id and a hash of the exact body,
    so nobody can take a request's message id first without sending the very same bytes."""
    return f"{request_id}:{hashlib.sha256(body).hexdigest()[:32]}"


# Request ids become ledger (KV) keys, message ids and file names: a safe alphabet, and dots
# only between other characters (a KV key cannot end with "." or hold "..").
REQUEST_ID_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*(?:/[A-Za-z0-9][A-Za-z0-9_-]{0,63})?$"
)
# A burst's child is `<parent id>/<key>` (the one `/` an id may hold): only the fetcher makes
# them, from a burst; a published request may not use one.
CHILD_SEPARATOR = "/"
Priority = Literal["interactive", "normal", "bulk"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "normal", "bulk")

LOCALE_PATTERN = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8}){0,3}$"

Format = Literal["pdf", "html", "csv", "xlsx"]
# A template marks a table exportable with data-export="<name>": the name of its CSV file and
# XLSX sheet, so file-name and sheet-name safe (Excel allows 31 characters).
EXPORT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$"
PdfVariant = Literal["pdf/a-3b", "pdf/a-2b", "pdf/ua-1"]
PDF_VARIANTS: tuple[str, ...] = ("pdf/a-3b", "pdf/a-2b", "pdf/ua-1")
# One request is one report: bounded fan-out, so no request can hold a stage for everyone else.
MAX_SOURCES = 50
MAX_DELIVERIES = 20
MAX_EMAIL_DELIVERIES = 5
Channel = Literal["file", "email", "s3", "webhook"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_request_id(*, received: datetime | None = None, stream_seq: int | None = None) -> str:
    """The request_id of a request published without one.

    Given where the message sits on the stream (when it was first delivered and its stream
    sequence), the same id on every redelivery of that message; otherwise a random one.
    """
    if stream_seq is not None:
        stamp = received.strftime("%Y%m%d%H%M%S") if received else "0"
        return f"req-{stamp}-{stream_seq}"
    return f"req-{uuid.uuid4().hex[:16]}"


# Every model here says `defer_build=True`: pydantic builds its validator when it is first used,
# not when this module is imported (45 ms of every `pressroom` command's start, most of which
# validate no event).
class Event(BaseModel):
    """Base of every bus payload: frozen, versioned, tolerant of fields added by newer producers."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    schema_version: int = Field(
        default=SCHEMA_VERSION, description="Version of this payload's schema."
    )


class Source(BaseModel):
    """One data source the fetcher gathers; its result reaches the template under `name`."""

    model_config = ConfigDict(frozen=True, extra="allow", defer_build=True)

    name: str = Field(description="Name the template sees the result under.", pattern=r"^\w+$")
    kind: str = Field(
        default="",
        description="Adapter: http, prometheus, github, jira, file; omit it with `source`.",
    )
    source: str | None = Field(
        default=None,
        description="Name of a source in the config file: its URL and credentials are the "
        "operator's, and a request may not change them.",
    )

    @model_validator(mode="after")
    def _kind_or_named(self) -> Source:
        if not self.kind and not self.source:
            raise ValueError("a source needs a `kind`, or `source` naming a config-file source")
        return self


class Delivery(BaseModel):
    """One place the distributor delivers the artefacts to; extra keys depend on the channel."""

    model_config = ConfigDict(frozen=True, extra="allow", defer_build=True)

    channel: Channel = Field(description="file, email, s3 or webhook.")


class Burst(BaseModel):
    """One request, one report per item of a list in the fetched data (each its own child)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    over: str = Field(
        description="Dotted path to a list in the fetched data (e.g. `accounts.items`).",
        pattern=r"^\w+(\.\w+)*$",
        max_length=200,
    )
    key: str = Field(
        description="Field of an item naming its child: `<request_id>/<key>` (letters, digits, "
        "`_`, `-`; at most 64 characters).",
        pattern=r"^\w+(\.\w+)*$",
        max_length=100,
    )
    deliver: list[Delivery] = Field(
        description="Each child's deliveries; string fields may use `{{ item.<field> }}`.",
        min_length=1,
        max_length=MAX_DELIVERIES,
    )
    shared: list[str] | None = Field(
        default=None,
        description="Top-level context entries (sources, params) each child also sees besides "
        "its `item`; default: the request's `params`. Never the list itself.",
        max_length=MAX_SOURCES,
    )


class PdfMetadata(BaseModel):
    """Document properties a request (or a schedule, or a template) may set; the title comes
    from the template's <title>, the dates from the request."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    author: str | None = Field(
        default=None, max_length=200, description="Author (default PRESSROOM_PDF_AUTHOR)."
    )
    subject: str | None = Field(default=None, max_length=500, description="Subject.")
    keywords: list[str] | None = Field(
        default=None, max_length=20, description="Keywords (at most 20)."
    )

    @field_validator("keywords")
    @classmethod
    def _short_keywords(cls, value: list[str] | None) -> list[str] | None:
        if value and any(len(k) > 64 or not k.strip() for k in value):
            raise ValueError("each keyword is 1 to 64 characters")
        return value


# A user password travels sealed to the renderer's key (`pressroom pdf seal`), never in clear:
# the request, the ledger, the bus and dead letters only ever hold this token.
SEALED_PREFIX = "sealed1:"
SEALED_PATTERN = r"^sealed1:[A-Za-z0-9_-]{80,2000}={0,2}$"


class PdfPermissions(BaseModel):
    """What a reader of a password-protected PDF may do (without the owner password)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        serialize_by_alias=True,
        defer_build=True,
    )

    print: bool = Field(default=True, description="Print the document (high resolution).")
    copy_text: bool = Field(
        default=False, alias="copy", description="Copy or extract its text and images."
    )


class PdfOptions(BaseModel):
    """How the PDF is made and finished (per request, per schedule, per template; operator
    defaults and limits in PRESSROOM_PDF_* and PRESSROOM_SIGN_*). A key left out takes the
    template's (its front matter's `pdf:`) or the operator's default; a key given — `null`
    included — is the request's choice. A request may add protection, never remove what the
    operator imposes."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    variant: PdfVariant | None = Field(
        default=None,
        description="Standard the PDF conforms to: 'pdf/a-3b' (archival, with the provenance "
        "attachment pressroom.json), 'pdf/a-2b', 'pdf/ua-1' (accessible, tagged), or null (a "
        "plain PDF). PRESSROOM_PDF_REQUIRE may make a request's choice a refusal.",
    )
    tagged: bool | None = Field(
        default=None,
        description="Tagged PDF: a structure tree (headings, tables with header cells, charts "
        "with alt text, reading order) for screen readers and reuse.",
    )
    metadata: PdfMetadata | None = Field(
        default=None, description="Author, subject and keywords of the document."
    )

    password: str | None = Field(
        default=None,
        description="The reader's password, sealed to the renderer's key (`pressroom pdf seal`; "
        f"'{SEALED_PREFIX}…'): a password in clear is refused. The PDF is encrypted with "
        "AES-256; its owner password is the operator's.",
    )
    permissions: PdfPermissions | None = Field(
        default=None,
        description="Print/copy permissions; encrypts the PDF (no password needed to open it "
        "unless `password` is set).",
    )
    watermark: str | None = Field(
        default=None,
        min_length=1,
        max_length=120,
        description="Text stamped across every page, e.g. 'DRAFT' or 'CONFIDENTIAL — for "
        "{recipient}' ({recipient}: the request's requested_by). An operator's "
        "PRESSROOM_PDF_WATERMARK is stamped as well.",
    )
    sign: bool | None = Field(
        default=None,
        description="Sign the PDF (PAdES) with the operator's key; with a timestamp when a "
        "timestamp server is configured. Refused when no key is configured.",
    )
    append: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="PDFs from the templates folder to append, each one the operator allowed "
        "(PRESSROOM_PDF_APPEND_ALLOW); the report's page numbers count their pages.",
    )

    @field_validator("password")
    @classmethod
    def _sealed(cls, value: str | None) -> str | None:
        # The message never repeats the value: it may be a password sent in clear by mistake.
        if value is not None and not re.fullmatch(SEALED_PATTERN, value):
            raise ValueError(
                f"must be sealed ('{SEALED_PREFIX}…' from `pressroom pdf seal`), never in clear"
            )
        return value

    @field_validator("append")
    @classmethod
    def _inside_templates(cls, value: list[str]) -> list[str]:
        for name in value:
            parts = name.replace("\\", "/").split("/")
            if not name or name.startswith("/") or ".." in parts or len(name) > 200:
                raise ValueError("each name must be a file inside the templates folder")
        return list(dict.fromkeys(value))

    def given(self) -> dict[str, Any]:
        """The keys the request set (null included), as JSON."""
        return self.model_dump(mode="json", exclude_unset=True)


class ReportRequested(Event):
    """Someone wants a report: published by other systems, the scheduler and the CLI."""

    request_id: str = Field(
        default_factory=new_request_id,
        description="Idempotency key; a request_id already delivered is not delivered again.",
        pattern=REQUEST_ID_PATTERN,
        max_length=128 + 65,  # a child: a parent id of up to 128, `/`, a key of up to 64
    )
    template: str = Field(description="Template name inside the templates folder.", min_length=1)
    formats: list[Format] = Field(
        default_factory=lambda: ["pdf"],  # type: ignore[arg-type]
        description="Artefacts to produce (each at most once): pdf, html, csv (one file per "
        'table the template marks data-export="name"), xlsx (one workbook, a sheet per '
        "such table).",
        min_length=1,
        max_length=4,
    )
    pdf: PdfOptions | None = Field(
        default=None,
        description="PDF options: standard (PDF/A, PDF/UA), tags, document metadata, appended "
        "PDFs, watermark, password, permissions, signature. Left out: the template's and the "
        "operator's defaults; the operator's limits win.",
    )
    csv_bom: bool | None = Field(
        default=None,
        description="Start each CSV with a UTF-8 byte order mark (Excel reads the encoding "
        "from it). Default: PRESSROOM_EXPORT_CSV_BOM.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Inline values; merged over source results."
    )
    sources: list[Source] = Field(
        default_factory=list,
        description=f"Data to gather first (at most {MAX_SOURCES}).",
        max_length=MAX_SOURCES,
    )
    deliver: list[Delivery] = Field(
        default_factory=list,
        description="Where to deliver; empty means the configured default (a `file` delivery); "
        f"at most {MAX_DELIVERIES}.",
        max_length=MAX_DELIVERIES,
    )
    use_cache: bool = Field(
        default=False,
        description="Serve every source from the fetch cache when fresh (the legacy --use-cache).",
    )
    filename: str | None = Field(
        default=None,
        max_length=200,
        description="Name pattern of delivered files, e.g. `{title}-{date}` (placeholders: "
        "title, template, date, period, request_id, short_id); sanitised, at most 40 "
        "characters. Default: `{title}-{date}` for attachments, the request id for folders.",
    )
    requested_by: str | None = Field(default=None, description="Who asked, for the ledger.")
    tenant: str | None = Field(
        default=None,
        description="Set by Pressroom, never by a body (a published value is replaced): the "
        "calling system whose account published the request (the subject it arrived on, "
        "`report.requested.<tenant>`), else null (ops, the scheduler). A tenant's `file` "
        "deliveries stay inside PRESSROOM_OUT_DIR/<tenant>/.",
    )
    requested_at: datetime = Field(default_factory=utcnow, description="When it was asked.")
    locale: str | None = Field(
        default=None,
        description="Language and region the report is written for (BCP 47, e.g. 'de-DE', "
        "'ja', 'zh-Hant-TW'): how numbers and dates read, and which CJK glyph forms are used.",
        pattern=LOCALE_PATTERN,
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=7 * 86400,
        description="Seconds the report may take from `requested_at`: past it, the stage at work "
        "(or the next to pick it up) fails it, 'timed out after N s at <stage>', instead of "
        "retrying or waiting on for ever. Default: no limit but the stages' own.",
    )
    burst: Burst | None = Field(
        default=None,
        description="One report per item of a list in the data, each to its own recipients "
        "(`<request_id>/<key>`); the request's outcome summarises its children.",
    )
    priority: Priority = Field(
        default="normal",
        description="Lane: `interactive` is never queued behind `bulk` work (the operator caps "
        "what each publisher may ask for); bursts' children and big reports run as `bulk`.",
    )
    parent: str | None = Field(
        default=None,
        description="Set by Pressroom on a burst's child: the request it belongs to.",
    )
    skip_if_empty: str | None = Field(
        default=None,
        pattern=r"^\w+(\.\w+)*$",
        max_length=200,
        description="A source name or dotted path into the fetched data: when it is empty or "
        "missing, the run is recorded as `skipped` with the reason and nothing is sent.",
    )
    burst_index: int | None = Field(
        default=None, ge=0, description="Set by Pressroom on a burst's child: its item's position."
    )
    split: Literal["auto", "on", "off"] | None = Field(
        default=None,
        description="Lay a long report out in several render processes at once: 'auto' (from "
        "the renderer's row threshold, the default), 'on' (whenever its longest table can be "
        "cut) or 'off'. The operator's PRESSROOM_RENDER_SPLIT=off wins.",
    )

    @model_validator(mode="after")
    def _children_only_under_their_parent(self) -> ReportRequested:
        parent, sep, _ = self.request_id.partition(CHILD_SEPARATOR)
        if sep and self.parent != parent:
            raise ValueError(
                "request_id: '/' is reserved for a burst's children (<parent id>/<key>)"
            )
        if self.parent is not None and not sep:
            raise ValueError("parent: set by Pressroom on a burst's children only")
        return self

    @field_serializer("pdf")
    def _pdf_as_given(self, value: PdfOptions | None) -> dict[str, Any] | None:
        # Only the keys the request set travel on: a key left out must stay "not said" (the
        # template's default applies) and not become an explicit null on the next stage.
        return None if value is None else value.given()

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        return None if value is None else cls.checked_locale(value)

    @staticmethod
    def checked_locale(value: str) -> str:
        """The locale if Babel knows it, else a ValueError saying what a locale looks like."""
        # Imported here: heavy locale data: only for a request that names a locale.
        from babel import Locale, UnknownLocaleError

        try:
            if not re.fullmatch(LOCALE_PATTERN, value):
                raise ValueError(value)
            Locale.parse(value.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            raise ValueError(
                f"unknown locale '{value}' (a language tag such as 'en', 'de-DE', 'zh-Hant-TW')"
            ) from None
        return value

    @field_validator("deliver")
    @classmethod
    def _few_emails(cls, value: list[Delivery]) -> list[Delivery]:
        # The company mail server sends what a request asks: a handful of messages, not spam.
        emails = sum(1 for d in value if d.channel == "email")
        if emails > MAX_EMAIL_DELIVERIES:
            raise ValueError(
                f"at most {MAX_EMAIL_DELIVERIES} email deliveries per request, got {emails} "
                "(put several recipients in one `to`)"
            )
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def _each_format_once(cls, value: Any) -> Any:
        # ["pdf"] * 40000 is one PDF, not forty thousand uploads.
        return list(dict.fromkeys(value)) if isinstance(value, list) else value

    @field_validator("template")
    @classmethod
    def _template_stays_inside_folder(cls, value: str) -> str:
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts:
            raise ValueError("template must be a name inside the templates folder")
        return value


# Fields added after fingerprints were first recorded: at their default, left out, so a request
# keeps the fingerprint its ledger entry holds.
_NEWER_DEFAULTS: dict[str, Any] = {
    "timeout": None,
    "burst": None,
    "parent": None,
    "burst_index": None,
    "skip_if_empty": None,
    "pdf": None,
    "csv_bom": None,
}


def request_fingerprint(request: ReportRequested) -> str:
    """What a request_id is bound to: the request's content, without its id and timestamps.

    The same content published again is the same request (a no-op); other content under a
    used id is refused. `requested_at` is left out: it defaults to the time of parsing.
    """
    # `tenant` is left out: Pressroom sets it from the subject (a body's is replaced), and a
    # tenant's request says the same in `requested_by`; fingerprints stay as they were.
    # `priority` is left out too: it says when, not what (a cap may lower it on the way).
    content = request.model_dump(
        mode="json", exclude={"request_id", "requested_at", "tenant", "priority"}
    )
    content.pop("schema_version", None)
    for name, default in _NEWER_DEFAULTS.items():  # as before these fields existed
        if content.get(name) == default:
            content.pop(name, None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class _CarriesRequest(Event):
    """An event after `report.requested`: it must carry the request with its id."""

    @model_validator(mode="before")
    @classmethod
    def _request_has_id(cls, data: Any) -> Any:
        if isinstance(data, dict):
            request = data.get("request")
            if isinstance(request, dict) and not request.get("request_id"):
                raise ValueError("request.request_id is required after report.requested")
        return data


class DataReady(_CarriesRequest):
    """The fetcher gathered everything a request needs."""

    request: ReportRequested = Field(description="The original request.")
    context: dict[str, Any] | None = Field(
        default=None, description="The template context, inline when small enough."
    )
    context_ref: str | None = Field(
        default=None, description="Artefact-store key of the context when too big to inline."
    )
    fetch_seconds: float = Field(default=0.0, description="Time spent gathering the data.")
    cache_hits: int = Field(default=0, description="Sources served from the cache.")
    cache_misses: int = Field(default=0, description="Cacheable sources fetched afresh.")
    fetched_at: dict[str, datetime] = Field(
        default_factory=dict,
        description="When each source's data was fetched (sources served from the fetch cache "
        "are absent): the provenance a PDF/A-3 report embeds.",
    )

    @model_validator(mode="after")
    def _has_data(self) -> DataReady:
        if self.context is None and not self.context_ref:
            raise ValueError("data.ready needs `context` or `context_ref`")
        return self

    @property
    def request_id(self) -> str:
        return self.request.request_id


class BurstSent(_CarriesRequest):
    """The fetcher sent a burst's children on their way, each as its own `data.ready`; the
    parent itself goes no further (its outcome summarises its children's)."""

    request: ReportRequested = Field(description="The parent request.")
    children: int = Field(description="Children sent now (a replay: those not yet delivered).")
    total: int = Field(description="Items in the list the burst goes over.")
    fetch_seconds: float = Field(default=0.0, description="Time spent gathering the data.")

    @property
    def request_id(self) -> str:
        return self.request.request_id


class RunSkipped(_CarriesRequest):
    """The fetcher found the request's `skip_if_empty` data empty: nothing is rendered or sent."""

    request: ReportRequested
    reason: str

    @property
    def request_id(self) -> str:
        return self.request.request_id


class Artefact(BaseModel):
    """A rendered file in the artefact store: referenced by key, never carried on the bus."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    format: Format
    name: str | None = Field(
        default=None,
        description="For a csv: the exportable table it holds (the template's data-export "
        "name); the file is <report>.<name>.csv.",
        pattern=EXPORT_NAME_PATTERN,
    )
    key: str = Field(description="Key in the artefact store.")
    size: int = Field(description="Size in bytes.")
    sha256: str = Field(description="Hex SHA-256 of the content.")
    content_type: str

    @property
    def ext(self) -> str:
        """The file extension: `pdf`, `xlsx`, or `<table>.csv` for one table's CSV."""
        return f"{self.name}.{self.format}" if self.name else self.format


class ReportRendered(_CarriesRequest):
    """The renderer stored the artefacts."""

    request: ReportRequested
    artefacts: list[Artefact]
    template_version: str = Field(description="Content hash of the template and its includes.")
    render_seconds: float = Field(description="Time spent rendering HTML and PDF.")

    @property
    def request_id(self) -> str:
        return self.request.request_id


class ChannelResult(BaseModel):
    """What happened on one delivery channel."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    channel: Channel
    ok: bool
    target: str = Field(
        description="Where it went: a path, bucket/key, URL (query values and userinfo masked) "
        "or recipients."
    )
    detail: str = Field(default="", description="Error reason or extra information.")

    @field_validator("target", "detail")
    @classmethod
    def _no_secrets(cls, value: str) -> str:
        return mask_url_secrets(value)


class ReportDelivered(Event):
    """Every channel delivered."""

    request_id: str
    template: str
    artefacts: list[Artefact]
    channels: list[ChannelResult]
    delivered_at: datetime = Field(default_factory=utcnow)
    burst: str | None = Field(
        default=None,
        description="A burst's parent: what its children did, e.g. 'delivered 10,000, failed 0'.",
    )
    requested_by: str | None = Field(
        default=None,
        description="Who asked: for a calling system's request, its publisher name (its "
        "outcomes go to it alone).",
    )


class ReportFailed(Event):
    """A request ended without delivery; a dead letter holds the message for replay."""

    request_id: str
    stage: str = Field(description="fetcher, renderer or distributor.")
    reason: str = Field(description="What went wrong, for a human.")
    attempts: int
    subject: str = Field(description="Subject of the message that failed.")
    dead_letter_seq: int | None = Field(
        default=None, description="Sequence of the dead letter in the DLQ stream."
    )
    failed_at: datetime = Field(default_factory=utcnow)
    refused: bool = Field(
        default=False,
        description="True when the failed message did not own this request_id (an invalid "
        "payload, other content under a used id, an imitated schedule): the request's own "
        "outcome is unaffected, and watchers should not take this as its failure.",
    )
    fingerprint: str | None = Field(
        default=None,
        description="Content fingerprint of the refused message's request, when readable: a "
        "publisher can tell its own refused message from someone else's.",
    )
    requested_by: str | None = Field(
        default=None,
        description="Who asked: for a calling system's request, its publisher name (its "
        "outcomes go to it alone).",
    )

    @field_validator("reason")
    @classmethod
    def _no_secrets(cls, value: str) -> str:
        return mask_url_secrets(value)


def _json_object(body: bytes) -> dict[str, Any] | None:
    """A raw message's JSON object, or None when it is not one (unverified either way)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def claimed_request_id(body: bytes) -> str | None:
    """The request_id a raw message says it is about (unverified), or None."""
    data = _json_object(body)
    if data is None:
        return None
    request = data.get("request")
    rid = data.get("request_id") or (
        request.get("request_id") if isinstance(request, dict) else None
    )
    return rid if isinstance(rid, str) else None


def claimed_child(body: bytes) -> tuple[str, int] | None:
    """The (parent, item position) a stage message's request names as a burst's child."""
    data = _json_object(body)
    request = data.get("request") if data is not None else None
    if not isinstance(request, dict):
        return None
    parent, index = request.get("parent"), request.get("burst_index")
    if isinstance(parent, str) and isinstance(index, int) and not isinstance(index, bool):
        return parent, index
    return None


def claimed_requester(subject: str, body: bytes) -> str | None:
    """Who asked for the request a message is about: the tenant its subject names (a tenant's
    body cannot say otherwise), or the `requested_by` that the services' own account wrote."""
    tenant = tenant_of_subject(subject)
    subject = unlaned(subject)  # a lane's body was stamped where it came in
    if tenant is not None or (subject == REPORT_REQUESTED and b"requested_by" not in body):
        return tenant
    data = _json_object(body)
    if data is None:
        return None
    request = data if subject == REPORT_REQUESTED else data.get("request")
    who = request.get("requested_by") if isinstance(request, dict) else None
    return who if isinstance(who, str) else None


class DeadLetter(BaseModel):
    """The envelope published on `dlq.<subject>`: enough to understand and to replay."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    subject: str = Field(description="Original subject; replay publishes back to it.")
    payload: str = Field(
        description="Original message body (UTF-8, or base64 if binary); only a preview when "
        "`payload_ref` is set."
    )
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    payload_size: int | None = Field(default=None, description="Size of the original body.")
    payload_ref: str | None = Field(
        default=None,
        description="Artefact-store key of the whole original body when it was too big to "
        "carry in the envelope; replay reads it from there.",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    stage: str
    reason: str
    permanent: bool = Field(description="True when retrying would not help.")
    attempts: int
    first_failure: datetime
    last_failure: datetime
    request_id: str | None = None


EVENT_MODELS: dict[str, type[Event]] = {
    REPORT_REQUESTED: ReportRequested,
    DATA_READY: DataReady,
    REPORT_RENDERED: ReportRendered,
    REPORT_DELIVERED: ReportDelivered,
    REPORT_FAILED: ReportFailed,
}
