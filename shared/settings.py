"""The one Settings object: PRESSROOM_* environment variables, optionally a YAML file.

Strict on purpose: a missing config file, an unknown key or variable (a typo), or an invalid
value stops a process at start with one line naming the setting — never "accepted now, failing
later, or never".
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from shared.errors import PressroomError
from shared.events import TENANT_NAME, Delivery
from shared.urls import mask_url_secrets, public_url

EMBEDDED_HOST = "127.0.0.1"
ENV_PREFIX = "PRESSROOM_"
CREDENTIAL_KEYS = frozenset(
    {"token", "user", "headers", "api_url", "base_url", "url", "origins", "tenants"}
)
# What each kind of named source may say (a typo such as `api_urll` is an error, not ignored).
SOURCE_KEYS: dict[str, frozenset[str]] = {
    "http": frozenset({"url", "params", "headers", "credentials"}),
    "prometheus": frozenset({"url", "query", "start", "end", "step", "time", "credentials"}),
    "github": frozenset({"repo", "endpoint", "params", "api_url", "credentials", "max_pages"}),
    "jira": frozenset({"url", "jql", "fields", "max_results", "credentials"}),
    "file": frozenset({"path"}),
}
SOURCE_KINDS = frozenset(SOURCE_KEYS)
COMMON_SOURCE_KEYS = frozenset({"kind", "cache", "merge", "tenants"})
# `tenants:` on a credential or named source: the calling systems (`--publisher NAME`) that may
# use it, or "*" for all of them (shared/bus/identity.py spells tenant names the same way).
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SECRET_FIELDS = frozenset(
    {
        "s3_secret_key",
        "smtp_password",
        "webhook_secret",
        "webhook_secrets",
        "nats_password",
        "console_secret",
        "oidc_client_secret",
        "pdf_owner_password",
    }
)
# Settings still read under an earlier name: {older name: the name DESIGN.md gives}.
OLDER_NAMES = {"sign_key_file": "sign_key", "sign_cert_file": "sign_cert"}


class ConfigError(PressroomError):
    """The configuration cannot be used; the reason names the setting."""


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Configuration for every Pressroom process.

    Environment variables win over the YAML file named by PRESSROOM_CONFIG, which wins over
    the defaults. The YAML file also holds what does not fit an environment variable:
    schedules, data-source credentials and delivery defaults.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    config: Path | None = Field(default=None, description="YAML file with more settings.")

    # Bus
    nats_url: str | None = Field(default=None, description="Unset: the embedded nats-server.")
    nats_port: int = Field(default=4222, ge=1, le=65535, description="Embedded nats-server port.")
    data_dir: Path = Field(default=Path(".pressroom"), description="Embedded server state.")
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of each stream (3 in a cluster)."
    )
    duplicate_window: float = Field(default=600.0, gt=0, description="Nats-Msg-Id window, s.")
    # Bus identity (shared/bus/identity.py): one of these; the embedded server uses the data
    # folder's
    nats_nkey: Path | None = Field(default=None, description="An nkey seed file.")
    nats_credentials_dir: Path | None = Field(
        default=None, description="Folder from `pressroom bus auth`: <role>.nk per process."
    )
    nats_creds: Path | None = Field(default=None, description="A NATS JWT .creds file.")
    nats_user: str | None = None
    nats_password: str | None = None
    nats_tls_ca: Path | None = Field(default=None, description="CA that signed the server.")
    nats_tls_cert: Path | None = Field(default=None, description="Client certificate (mTLS).")
    nats_tls_key: Path | None = Field(default=None, description="Key of the client certificate.")

    # Cluster failover: how fast a worker notices a lost node and carries on (docs/scaling.md)
    failover_patience: float = Field(
        default=20.0,
        description="Seconds a stage retries a bus operation while NATS elects a new leader "
        "(0: hand the message back at once).",
    )
    bus_request_timeout: float = Field(
        default=1.0, description="Seconds one JetStream request waits before it is retried."
    )
    pull_timeout: float = Field(
        default=1.0, description="Seconds a worker's pull request waits before it is renewed."
    )
    bus_ping_interval: int = Field(
        default=2, description="Seconds between pings; two unanswered: try another server."
    )

    # Folders
    templates_dir: Path = Field(default=Path("templates"))
    out_dir: Path = Field(default=Path("out"), description="Root of the `file` channel.")
    data_files_dir: Path = Field(default=Path("data"), description="Root of `file` sources.")
    file_allow_absolute: bool = Field(
        default=False, description="Let `file` deliveries name absolute folders."
    )

    # Artefact store: S3 when an endpoint is set, the JetStream Object Store otherwise
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = True
    s3_region: str | None = None
    s3_timeout: float = Field(
        default=60.0, gt=0, description="Seconds for a whole S3 delivery, not per read."
    )
    artefact_bucket: str = "pressroom-artefacts"
    artefact_retention_days: float = Field(default=30.0, gt=0, description="`pressroom clean` age.")

    # Email
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "pressroom@localhost"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = Field(
        default=30.0, gt=0, description="Seconds for a whole SMTP conversation, not per read."
    )
    email_attachment_limit: int = Field(default=10 * 1024 * 1024, ge=0, description="Bytes.")

    # What a request may ask for (the trust model): request-supplied values are checked
    source_allow: str = Field(
        default="", description="Hosts, host:ports or CIDRs request-supplied source URLs may use."
    )
    fetch_max_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest answer a data source may give."
    )
    email_allow: str = Field(default="", description="Domains or addresses email may go to.")
    # Each calling system's own (DESIGN.md "Tenants on the bus"): one system's requests cannot
    # mail the recipients another's may (its customers would get a report they cannot tell
    # from that system's).
    email_allows: str = Field(
        default="",
        description="Per calling system, repeated for more: `alpha=alpha.example,alpha=ops@"
        "example.com,beta=.beta.example`; a system named here mails only its own, the others "
        "PRESSROOM_EMAIL_ALLOW's.",
    )
    s3_delivery_allow: str = Field(
        default="", description="Buckets or bucket/prefix that s3 deliveries may write to."
    )

    # Webhooks
    webhook_secret: str | None = None
    # Each calling system's own key (DESIGN.md "Tenants on the bus"): a receiver verifying with
    # it knows the delivery came from that caller's request, not another's.
    webhook_secrets: str = Field(
        default="",
        repr=False,
        description="Per calling system: `alpha=whsec_…,beta=whsec_…` signs its webhooks.",
    )
    webhook_secrets_file: Path | None = Field(
        default=None,
        description="A file of `name=whsec_…` lines, as PRESSROOM_WEBHOOK_SECRETS (read by the "
        "distributor).",
    )
    webhook_secret_fallback: bool = Field(
        default=False,
        description="Sign a calling system's webhooks with PRESSROOM_WEBHOOK_SECRET when it has "
        "no secret of its own (false: refused; its receivers could not tell callers apart).",
    )
    webhook_allow: str = Field(default="", description="Hosts/CIDRs allowed although private.")
    webhook_timeout: float = Field(
        default=15.0, gt=0, description="Seconds for a whole webhook call, not per read."
    )
    # One slow target must not hold every delivery: messages are worked on side by side, and
    # one target (a webhook host, the SMTP server, an S3 endpoint) gets only some of the slots.
    distributor_concurrency: int = Field(
        default=16, ge=1, description="Reports a distributor delivers at once."
    )
    delivery_target_limit: int = Field(
        default=4, ge=1, description="Deliveries to one target at once (as many more may wait)."
    )

    # Retries and dead letters (one mechanism for every stage)
    max_attempts: int = Field(default=5, ge=1, description="Deliveries before a dead letter.")
    retry_backoff: str = Field(default="1,5,15,60", description="Seconds between attempts.")
    # Work in progress is kept alive every ack_wait/3 (in-progress acks), so this bounds only
    # how long a message lost in transit (its worker's NATS node died) waits to be redelivered.
    ack_wait: float = Field(
        default=10.0, gt=0, description="Seconds before an unacked message returns."
    )
    shutdown_grace: float = Field(default=30.0, ge=0, description="Seconds work may finish.")
    startup_timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for NATS.")

    # Rendering
    render_workers: int = Field(default=1, ge=1, description="PDF worker processes per renderer.")
    render_prefetch: int = Field(
        default=1, ge=0, description="Messages a renderer holds beyond its render processes."
    )
    render_timeout: float = Field(
        default=120.0, gt=0, description="Seconds before a render is killed."
    )
    render_memory_mb: int = Field(
        default=2048, ge=256, description="Address-space cap of a render worker, MiB."
    )
    render_max_renders: int = Field(
        default=10_000, ge=0, description="Renders before a render process is recycled (0: never)."
    )
    render_max_rss_mb: int = Field(
        default=1024, ge=0, description="Resident MiB above which a render process is recycled."
    )
    max_output_bytes: int = Field(default=5 * 1024 * 1024, gt=0, description="Largest artefact.")
    page_size: str = "A4"
    page_orientation: Literal["portrait", "landscape"] = "portrait"
    page_margin: str = "18mm"
    asset_allow: str = Field(default="", description="Hosts templates may fetch assets from.")
    render_cache: bool = Field(
        default=True,
        description="Reuse the stored artefact when the same request is redelivered.",
    )
    inline_context_limit: int = Field(
        default=256 * 1024, gt=0, le=768 * 1024, description="Bigger goes by reference."
    )
    render_split: Literal["auto", "off"] = Field(
        default="auto",
        description="Lay a long report out in several render processes at once (auto) or not.",
    )
    render_split_rows: int = Field(
        default=500, ge=1, description="Table rows from which `auto` splits a report."
    )
    missing_glyphs: Literal["fail", "warn"] = Field(
        default="fail",
        description="A character no font can draw: fail the render, or warn and deliver boxes.",
    )
    fonts_dir: str = Field(
        default="", description="More font folders for the renderer (':'- or ','-separated)."
    )

    # The PDF's standard, tags and metadata (issue 30; request `pdf`, template front matter)
    pdf_variant: Literal["", "pdf/a-3b", "pdf/a-2b", "pdf/ua-1"] = Field(
        default="",
        description="Standard of a PDF whose request and template name none ('': plain PDF).",
    )
    pdf_tagged: bool = Field(
        default=False, description="Tag a PDF whose request and template do not say."
    )
    pdf_require: str = Field(
        default="",
        description="What every PDF is, whatever a request says (comma-separated): a variant "
        "(pdf/a-3b, pdf/a-2b, pdf/ua-1) and/or `tagged`; a request asking otherwise is refused.",
    )
    pdf_author: str = Field(
        default="Pressroom", max_length=200, description="Author of a PDF that names none."
    )
    pdf_creator: str = Field(
        default="Pressroom", max_length=200, description="Creator (tool) written in every PDF."
    )
    export_csv_bom: bool = Field(
        default=False, description="Start CSV exports with a UTF-8 byte order mark (Excel)."
    )
    # Finishing PDFs (services/renderer/finish.py): what a request may ask, what it may not
    # turn off. Secrets are files the renderer reads (the operator's secret store mounts them).
    pdf_passwords: Literal["allow", "forbid"] = Field(
        default="allow", description="Whether a request may password-protect its PDF."
    )
    pdf_owner_password: str = Field(
        default="",
        description="Owner password of protected PDFs (or PRESSROOM_PDF_OWNER_PASSWORD_FILE).",
    )
    pdf_owner_password_file: str = Field(
        default="", description="File holding the owner password of protected PDFs."
    )
    pdf_seal_key_file: str = Field(
        default="", description="X25519 private key (PEM) that unseals requests' passwords."
    )
    pdf_watermark: str = Field(
        default="",
        max_length=120,
        description="Text stamped on every PDF, whatever the request says (e.g. DRAFT).",
    )
    pdf_append_allow: str = Field(
        default="", description="PDFs in the templates folder a request may append."
    )
    sign_key: str = Field(default="", description="Signing key: a PEM/DER file.")
    sign_cert: str = Field(default="", description="Signing certificate: a PEM/DER file.")
    sign_key_file: str = Field(default="", description="Older name of PRESSROOM_SIGN_KEY.")
    sign_cert_file: str = Field(default="", description="Older name of PRESSROOM_SIGN_CERT.")
    sign_chain_file: str = Field(default="", description="Intermediate certificates (PEM).")
    sign_key_password_file: str = Field(default="", description="Passphrase of the key.")
    sign_pkcs11_module: str = Field(default="", description="PKCS#11 library holding the key.")
    sign_pkcs11_token: str = Field(default="", description="PKCS#11 token label.")
    sign_pkcs11_key: str = Field(default="", description="PKCS#11 key (and cert) label.")
    sign_pkcs11_pin_file: str = Field(default="", description="File holding the token's PIN.")
    sign_tsa_url: str = Field(default="", description="RFC 3161 timestamp server (PAdES B-T).")
    sign_always: bool = Field(default=False, description="Sign every PDF, whatever the request.")

    # Fetching
    fetch_timeout: float = Field(default=10.0, gt=0, description="Seconds per source.")
    fetch_concurrency: int = Field(
        default=8, ge=1, description="Requests a fetcher works on at once."
    )
    fetch_deadline: float = Field(default=30.0, gt=0, description="Seconds for all sources.")
    burst_max_items: int = Field(
        default=10_000, ge=1, description="Items a burst may go over (children of one request)."
    )
    burst_publish_window: int = Field(
        default=64, ge=1, description="A burst's children being published at once."
    )

    # Lanes and admission (shared/lanes.py, shared/admission.py)
    priority_cap: Literal["interactive", "normal", "bulk"] = Field(
        default="normal",
        description="The highest priority a publisher identity may ask for, unless named in "
        "PRESSROOM_PRIORITY_CAPS (ops and the scheduler are uncapped).",
    )
    priority_caps: str = Field(
        default="", description="Per publisher: `billing=interactive,batch=bulk`."
    )
    bulk_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="A report whose data is this many bytes of JSON or more runs as bulk "
        "(0: never): one long text renders as long as thousands of rows.",
    )
    bulk_rows: int = Field(
        default=5000, ge=0, description="A report with this many rows runs as bulk (0: never)."
    )
    requester_max_queued: int = Field(
        default=0,
        ge=0,
        description="Reports a requester may have queued and unsettled; more are refused at "
        "once with report.failed (0: no limit).",
    )
    requester_limits: str = Field(
        default="", description="Per requester: `billing=500,batch=5000` (overrides the above)."
    )
    requester_rate: str = Field(
        default="",
        description="Requests a requester may send, e.g. `600/min` (per s, min or h); more are "
        "refused at once with report.failed (empty: no limit).",
    )
    requester_rates: str = Field(
        default="", description="Per requester: `billing=600/min,batch=10/s` (overrides the above)."
    )
    requester_share: int = Field(
        default=0,
        ge=0,
        description="Reports of one requester in the pipeline at once while renders wait; its "
        "next ones wait at intake, in order (0: no share).",
    )
    requester_shares: str = Field(
        default="", description="Per requester: `billing=32,batch=4` (overrides the above)."
    )
    prometheus_url: str | None = None
    cache_ttl: float = Field(default=300.0, ge=0, description="Seconds a cached source is fresh.")

    # Health endpoints (/livez, /readyz): off unless a port is set (0 picks a free one)
    health_port: int | None = Field(default=None, ge=0, le=65535)
    health_host: str = "127.0.0.1"
    health_max_pending: int = Field(default=1000, ge=0, description="More waiting = degraded.")

    # `pressroom up`: a worker that exits is started again after 1 s, 2 s, 4 s … (at most 30 s),
    # and given up once it has been restarted this many times within the window
    restart_limit: int = Field(default=5, ge=0, description="Restarts per window, then give up.")
    restart_window: float = Field(default=300.0, gt=0, description="Seconds the limit counts.")

    # Logging (read once at process start by shared.observe.logging)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    cli_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    # Monitoring: the Prometheus `pressroom alerts` asks (unset: the one `up --prometheus` ran)
    monitor_url: str | None = None

    # Scheduler
    schedule_grace: float = Field(
        default=3600.0, ge=0, description="Catch up fires missed this recently."
    )
    schedule_tick: float = Field(default=1.0, gt=0, description="Seconds between checks.")
    schedule_on_time: float = Field(default=900.0, gt=0, description="Delivered within = on time.")

    # The web console (`pressroom console`, services/console/web) and its download links
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8480, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="The console's external URL: download links start with it."
    )
    console_secret: str | None = Field(
        default=None,
        description="Signs console sessions and download links (unset: <data_dir>/console.secret).",
    )
    console_users: Path | None = Field(
        default=None, description="Users file (unset: <data_dir>/console-users.yaml)."
    )
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    trace_url: str | None = Field(
        default=None, description="A trace UI's link with {trace_id} (Jaeger: …/trace/{trace_id})."
    )

    # The studio (services/console/studio): recorded data.ready payloads of real reports
    studio_record: bool = Field(
        default=True, description="The renderer records each report's data for the studio."
    )
    studio_keep_days: float = Field(
        default=14.0, gt=0, description="Recorded payloads older than this are deleted."
    )
    studio_max_payloads: int = Field(
        default=50, ge=1, description="Recorded payloads kept per template (the newest)."
    )
    studio_max_payload_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Larger payloads are not recorded."
    )
    studio_mask: str = Field(
        default="", description="Dotted paths masked in everything the studio shows (a,b.c)."
    )
    studio_promote: Literal["auto", "export"] = Field(
        default="auto",
        description="auto: promotion writes the templates folder when it can, else exports; "
        "export: always an export (templates kept in git).",
    )
    studio_key_file: Path | None = Field(
        default=None,
        description="X25519 private key (PEM) the console opens recordings with "
        "(unset: <data_dir>/studio-seal.pem, made on first use).",
    )
    studio_public_key_file: Path | None = Field(
        default=None,
        description="Public key the renderer seals recordings to (unset: the public half of "
        "the key file).",
    )

    # Everything else from the YAML file (schedules, sources, delivery defaults)
    schedules: list[dict[str, Any]] = Field(default_factory=list)
    source_credentials: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named data sources, for `pressroom sources test`."
    )
    delivery_defaults: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"channel": "file"}],
        description="Deliveries used when a request names none.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        given = getattr(init_settings, "init_kwargs", {}).get("config")
        config_file = given or os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(
                    f"PRESSROOM_CONFIG names '{config_file}', which is not a file "
                    "(fix the path, or unset PRESSROOM_CONFIG)"
                )
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    # ---- value checks (each error names its setting through load_settings) ---------------
    @field_validator("pdf_require")
    @classmethod
    def _known_requirements(cls, value: str) -> str:
        known = ("pdf/a-3b", "pdf/a-2b", "pdf/ua-1", "tagged")
        parts = _split(value)
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise ValueError(f"unknown requirement '{unknown[0]}' (known: {', '.join(known)})")
        if len([p for p in parts if p != "tagged"]) > 1:
            raise ValueError("at most one variant can be required")
        return ",".join(parts)

    @field_validator("retry_backoff")
    @classmethod
    def _backoff_is_seconds(cls, value: str) -> str:
        try:
            steps = [float(part) for part in _split(value)]
        except ValueError:
            raise ValueError(
                f"expects comma-separated seconds like 1,5,15, got '{value}'"
            ) from None
        if not steps or any(step < 0 for step in steps):
            raise ValueError(f"expects comma-separated seconds like 1,5,15, got '{value}'")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_usable(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook_secret(value)
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _tenant_secrets_are_usable(cls, value: str) -> str:
        parse_webhook_secrets(value)
        return value

    @field_validator("console_secret")
    @classmethod
    def _console_secret_is_long(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 24:
            raise ValueError(
                f"is {len(value)} characters; it signs sessions and download links, so at "
                'least 24: python -c "import secrets;print(secrets.token_urlsafe(32))"'
            )
        return value

    @field_validator("source_credentials")
    @classmethod
    def _credentials_are_known_keys(
        cls, value: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        for name, entry in value.items():
            if not isinstance(entry, dict):
                raise ValueError(f"'{name}' must be a mapping")
            unknown = sorted(set(entry) - CREDENTIAL_KEYS)
            if unknown:
                raise ValueError(
                    f"'{name}' has unknown keys {unknown} (known: {sorted(CREDENTIAL_KEYS)})"
                )
            _check_tenants(name, entry)
        return value

    @field_validator("sources")
    @classmethod
    def _sources_have_known_kinds(
        cls, value: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        for name, spec in value.items():
            if "/" in name:  # SCHEDULE/NAME is a schedule's own source (`sources test`)
                raise ValueError(f"'{name}': a source's name cannot hold '/'")
            kind = spec.get("kind") if isinstance(spec, dict) else None
            if kind not in SOURCE_KINDS:
                raise ValueError(
                    f"'{name}' needs a kind among {sorted(SOURCE_KINDS)}, got {kind!r}"
                )
            unknown = sorted(set(spec) - SOURCE_KEYS[kind] - COMMON_SOURCE_KEYS)
            if unknown:
                known = sorted(SOURCE_KEYS[kind] | COMMON_SOURCE_KEYS)
                raise ValueError(f"'{name}' ({kind}) has unknown keys {unknown} (known: {known})")
            _check_tenants(name, spec)
        return value

    @field_validator("source_allow", "webhook_allow", "asset_allow")
    @classmethod
    def _hosts_or_networks(cls, value: str) -> str:
        for entry in _split(value):
            if not _network_entry(entry):
                raise ValueError(
                    f"'{entry}' is not a host, host:port, IP or CIDR (no scheme, no path)"
                )
        return value

    @field_validator("email_allow")
    @classmethod
    def _domains_or_addresses(cls, value: str) -> str:
        for entry in _split(value):
            _check_recipient_entry(entry)
        return value

    @field_validator("email_allows")
    @classmethod
    def _tenant_domains_or_addresses(cls, value: str) -> str:
        parse_email_allows(value)
        return value

    @field_validator("s3_delivery_allow")
    @classmethod
    def _buckets_or_prefixes(cls, value: str) -> str:
        for entry in _split(value):
            bucket, _, prefix = entry.partition("/")
            if not _BUCKET.match(bucket) or ".." in prefix.split("/"):
                raise ValueError(f"'{entry}' is not a bucket or bucket/prefix")
        return value

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        """A setting given under its older name (`PRESSROOM_SIGN_KEY_FILE`) is the setting
        (`PRESSROOM_SIGN_KEY`); both given, they must agree."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in OLDER_NAMES.items():
            given = data.get(old)
            if not given:
                continue
            if data.get(new) and data[new] != given:
                raise ValueError(
                    f"{_env_name(new)} and {_env_name(old)} (its older name; `{new}` and "
                    f"`{old}` in PRESSROOM_CONFIG) differ: set one"
                )
            data[new] = given
        return data

    @model_validator(mode="after")
    def _one_owner_password(self) -> Settings:
        if self.pdf_owner_password and self.pdf_owner_password_file:
            raise ValueError(
                "PRESSROOM_PDF_OWNER_PASSWORD and PRESSROOM_PDF_OWNER_PASSWORD_FILE are both set: "
                "set one"
            )
        return self

    @model_validator(mode="after")
    def _named_credentials_exist(self) -> Settings:
        for name, spec in self.sources.items():
            wanted = spec.get("credentials")
            if wanted and wanted not in self.source_credentials:
                known = sorted(self.source_credentials) or "none"
                raise ValueError(
                    f"source '{name}' names credentials '{wanted}', which are not in "
                    f"source_credentials (known: {known})"
                )
        for name, entry in self.source_credentials.items():
            urls = [entry[k] for k in ("api_url", "base_url", "url") if entry.get(k)]
            urls += list(entry.get("origins") or [])
            for url in urls:
                parts = urlsplit(str(url))
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError(f"credentials '{name}': '{url}' is not an http(s) URL")
        return self

    @field_validator("delivery_defaults")
    @classmethod
    def _deliveries_are_valid(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in value:
            Delivery.model_validate(item)
        return value

    @property
    def embedded(self) -> bool:
        return not self.nats_url

    @property
    def bus_url(self) -> str:
        return self.nats_url or f"nats://{EMBEDDED_HOST}:{self.nats_port}"

    @property
    def nats_servers(self) -> list[str]:
        """PRESSROOM_NATS_URL as the list nats-py wants (comma-separated: a cluster)."""
        return [part.strip() for part in self.bus_url.split(",") if part.strip()]

    @property
    def bus_url_public(self) -> str:
        """The bus URL(s) as logs, health and errors may show them: no user:password@."""

        return ",".join(public_url(url) for url in self.nats_servers)

    @cached_property
    def backoff_seconds(self) -> list[float]:
        return [float(part) for part in _split(self.retry_backoff)] or [1.0]

    def backoff_for(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1` (attempts count from 1)."""
        steps = self.backoff_seconds
        return steps[min(attempt - 1, len(steps) - 1)]

    @property
    def webhook_allow_list(self) -> list[str]:
        return _split(self.webhook_allow)

    @property
    def studio_mask_paths(self) -> list[str]:
        return _split(self.studio_mask)

    @property
    def asset_allow_list(self) -> list[str]:
        return _split(self.asset_allow)

    @property
    def pdf_append_allow_list(self) -> list[str]:
        return _split(self.pdf_append_allow)

    @property
    def source_allow_list(self) -> list[str]:
        return _split(self.source_allow)

    @property
    def email_allow_list(self) -> list[str]:
        return _split(self.email_allow)

    def email_allow_for(self, tenant: str | None) -> tuple[list[str], str]:
        """Where a request's email may go, and the setting that says so: a calling system
        named in PRESSROOM_EMAIL_ALLOWS its own entries only; everyone else
        PRESSROOM_EMAIL_ALLOW's."""
        own = parse_email_allows(self.email_allows).get(tenant or "")
        if tenant is not None and own is not None:
            return own, f"PRESSROOM_EMAIL_ALLOWS for {tenant}"
        return self.email_allow_list, "PRESSROOM_EMAIL_ALLOW"

    @property
    def s3_delivery_allow_list(self) -> list[str]:
        return _split(self.s3_delivery_allow)


def check_webhook_secret(value: str) -> None:
    """A Standard Webhooks secret every library verifies with: `whsec_` + base64, ≥ 24 bytes."""
    make = "make one: echo whsec_$(openssl rand -base64 32)"
    if not value.startswith("whsec_"):  # what every Standard Webhooks library verifies with
        raise ValueError(f"must be whsec_<base64>; {make}")
    try:
        raw = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not whsec_ followed by valid base64; {make}") from None
    if len(raw) < 24:
        raise ValueError(f"is {len(raw)} bytes; Standard Webhooks needs at least 24")


# A calling system's name as `pressroom bus auth --publisher` takes it (shared/bus/identity.py).


def _check_recipient_entry(entry: str) -> None:
    domain = entry.rpartition("@")[2] if "@" in entry else entry.removeprefix("*.")
    if not _HOST.match(domain.removeprefix(".")) or "." not in domain.strip("."):
        raise ValueError(
            f"'{entry}' is not an address, a domain (example.com) or its subdomains (.example.com)"
        )


def parse_email_allows(text: str) -> dict[str, list[str]]:
    """`name=domain-or-address` entries, a name repeated for more, as {calling system: its
    allow-list}."""
    allows: dict[str, list[str]] = {}
    for entry in _split(text):
        name, sep, allowed = (part.strip() for part in entry.partition("="))
        if not sep or not TENANT_NAME.match(name) or not allowed:
            raise ValueError(
                f"'{entry}': expects name=domain or name=address (a publisher's name, then "
                "where its reports may be mailed)"
            )
        _check_recipient_entry(allowed)
        allows.setdefault(name, []).append(allowed)
    return allows


def parse_webhook_secrets(text: str) -> dict[str, str]:
    """`name=whsec_…` entries (split at commas and newlines; `#` starts a comment line) as
    {calling system: its secret}. The reasons never show a secret."""
    secrets: dict[str, str] = {}
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    for entry in _split(",".join(lines)):
        name, sep, secret = (part.strip() for part in entry.partition("="))
        if not sep or not TENANT_NAME.match(name):
            shown = name if TENANT_NAME.match(name) else "an entry"
            raise ValueError(f"{shown}: expects name=whsec_… (a publisher's name, then its secret)")
        if name in secrets:
            raise ValueError(f"'{name}' is named twice")
        try:
            check_webhook_secret(secret)
        except ValueError as error:
            raise ValueError(f"the secret of '{name}' {error}") from None
        if secret in secrets.values():
            raise ValueError(f"'{name}' has another caller's secret: each needs its own")
        secrets[name] = secret
    return secrets


def _network_entry(entry: str) -> bool:
    """A host, host:port, [v6]:port, an IP or a CIDR — what the allow-lists can match."""
    try:
        ipaddress.ip_network(entry, strict=False)
        return True
    except ValueError:
        pass
    host, port = entry, ""
    if entry.startswith("[") and "]:" in entry:
        host, _, port = entry[1:].partition("]:")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host))


def _env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """PRESSROOM_* variables that are no setting: typos, each with the closest real name."""
    known = {_env_name(f) for f in Settings.model_fields}
    problems = []
    for name in sorted(environ if environ is not None else os.environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name} is not a Pressroom setting{hint}")
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Settings, or a ConfigError whose one line names every setting that is wrong."""
    problems = unknown_environment()
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        reasons = "; ".join([*problems, describe(error)])
        raise ConfigError(f"invalid configuration: {reasons}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError, SettingsError) as error:
        # PRESSROOM_CONFIG's file does not parse, or a JSON setting in the environment: in one
        # line, its first 300 characters
        first = " ".join(str(error).split())[:300]
        where = "" if isinstance(error, SettingsError) else "PRESSROOM_CONFIG: "
        reasons = "; ".join([*problems, f"{where}{first}"])
        raise ConfigError(f"invalid configuration: {reasons}") from None
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return settings


def describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        if not item["loc"]:  # a check across settings: its message names them
            parts.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        field = str(item["loc"][0])
        where = ".".join(str(p) for p in item["loc"][1:])
        env = _env_name(field)
        origin = env if env in os.environ else f"`{field}` in PRESSROOM_CONFIG"
        if item["type"] == "extra_forbidden":
            known = difflib.get_close_matches(field, list(Settings.model_fields), n=1)
            hint = f" (did you mean `{known[0]}`?)" if known else ""
            parts.append(f"`{field}` in PRESSROOM_CONFIG is not a setting{hint}")
            continue
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{origin}{'.' + where if where else ''}: {message}")
    return "; ".join(parts)


# Keys whose values are secrets wherever they appear in a configuration (a credential's
# `token`, a schedule's webhook `secret`, a source's `api_key` parameter, an S3 access key).
SECRET_KEY = re.compile(
    r"authori[sz]ation|token|passw(or)?d|passphrase|pwd|secret|api[-_]?key|apikey|cookie|"
    r"credential|signature|(^|[-_])sig($|[-_])|private[-_]?key|access[-_]?key|session|jwt|"
    r"(^|[-_])pin($|[-_])|app[-_]?id",
    re.I,
)


def without_secrets(value: Any, mark: str, text: Callable[[str], str] = mask_url_secrets) -> Any:
    """A configuration value with every secret replaced by `mark`: the value of a secret-named
    key, every header's value, a parameter's value when its name says it is secret (in a
    mapping or a list of pairs), and in every string what `text` takes out (by default every
    URL's userinfo, query values, path parameters and path tokens). A path (`*_file`,
    `*_dir`) or a policy (`pdf_passwords`) is no secret, whatever its name."""
    if isinstance(value, dict):
        return {key: _without_secret(key, item, mark, text) for key, item in value.items()}
    if isinstance(value, list):
        return [without_secrets(item, mark, text) for item in value]
    if isinstance(value, str):
        return text(value)
    return value


def _without_secret(key: Any, item: Any, mark: str, text: Callable[[str], str]) -> Any:
    name = str(key)
    if name.endswith(("_file", "_dir")) or name == "pdf_passwords":
        return without_secrets(item, mark, text)
    if name in ("headers", "params"):

        def secret(param: str) -> bool:  # every header's value; a parameter's by its name
            return name == "headers" or bool(SECRET_KEY.search(param))

        if isinstance(item, dict):
            return {
                k: mark if secret(str(k)) else without_secrets(v, mark, text)
                for k, v in item.items()
            }
        if isinstance(item, list):  # [[name, value], …]: as good as a mapping to httpx
            return [
                [pair[0], mark if secret(str(pair[0])) else without_secrets(pair[1], mark, text)]
                if isinstance(pair, list | tuple) and len(pair) == 2
                else without_secrets(pair, mark, text)
                for pair in item
            ]
    if SECRET_KEY.search(name) and not isinstance(item, dict | list) and item not in (None, ""):
        return mark
    return without_secrets(item, mark, text)


def masked(settings: Settings, *, for_display: bool = True) -> dict[str, Any]:
    """The effective configuration with every secret replaced, for `pressroom config check`
    (`for_display`: every secret anywhere, `without_secrets`; otherwise the named secret
    settings, credentials and source headers only, as the config fingerprint has always read
    them, so that a changed URL changes the fingerprint)."""
    data = settings.model_dump(mode="json")
    if data.get("nats_url"):
        data["nats_url"] = settings.bus_url_public
    if for_display:
        return dict(without_secrets(data, "***"))
    for field in SECRET_FIELDS & set(data):
        if data[field]:
            data[field] = "***"
    for entry in data.get("source_credentials", {}).values():
        for key in ("token", "headers"):
            if entry.get(key):
                entry[key] = "***"
    for spec in data.get("sources", {}).values():  # a named source may carry an API key header
        if isinstance(spec.get("headers"), dict):
            spec["headers"] = dict.fromkeys(spec["headers"], "***")
    return data


def _check_tenants(name: str, entry: dict[str, Any]) -> None:
    """`tenants:` is a list of calling-system names (or "*"); a lone string is a typo waiting to
    bind a credential to nobody or to a name spelled letter by letter."""
    if "tenants" not in entry:
        return
    tenants = entry["tenants"]
    if not isinstance(tenants, list) or not all(
        isinstance(t, str) and (t == "*" or TENANT_NAME.match(t)) for t in tenants
    ):
        raise ValueError(
            f"'{name}': tenants must be a list of calling-system names (as in "
            f'`pressroom bus auth --publisher NAME`) or "*", got {tenants!r}'
        )


# What every service must agree on (README "Deployment", docs/operations.md "Config rollouts"):
# a worker whose fingerprint differs from the others' runs on another configuration.
# Not `source_credentials`: only the fetcher keeps them when they come from the environment
# (shared/secretenv.py), so every other worker would read as another configuration for ever.
SHARED_CONFIG = (
    "schedules",
    "sources",
    "delivery_defaults",
    "source_allow",
    "email_allow",
    "email_allows",
    "s3_delivery_allow",
    "webhook_allow",
    "asset_allow",
    "file_allow_absolute",
    "max_attempts",
    "retry_backoff",
)


def config_fingerprint(settings: Settings) -> str:
    """12 hex digits naming the configuration every service shares (schedules, sources,
    allow-lists, retries), secrets masked: equal fingerprints, equal shared configuration.
    Per-process settings (ports, render processes, memory) do not count."""
    data = masked(settings, for_display=False)
    shared = {key: data.get(key) for key in SHARED_CONFIG}
    blob = json.dumps(shared, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
