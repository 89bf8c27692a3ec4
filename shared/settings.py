"""The one Settings object: PRESSROOM_* environment variables, optionally a YAML file."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

EMBEDDED_HOST = "127.0.0.1"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def redact_url(url: str) -> str:
    """`url` without its user:password@ part: what may be logged or shown."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Settings(BaseSettings):
    """Configuration for every Pressroom process.

    Environment variables win over the YAML file named by PRESSROOM_CONFIG, which wins over
    the defaults. The YAML file also holds what does not fit an environment variable:
    schedules, data-source credentials and delivery defaults.
    """

    model_config = SettingsConfigDict(env_prefix="PRESSROOM_", extra="ignore", frozen=True)

    config: Path | None = Field(default=None, description="YAML file with more settings.")

    # Bus
    nats_url: str | None = Field(default=None, description="Unset: the embedded nats-server.")
    nats_port: int = Field(default=4222, description="Port of the embedded nats-server.")
    data_dir: Path = Field(default=Path(".pressroom"), description="Embedded server state.")
    stream_replicas: int = Field(default=1, description="Replicas of each stream (3 in a cluster).")
    duplicate_window: float = Field(default=600.0, description="Nats-Msg-Id window, seconds.")

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
    artefact_bucket: str = "pressroom-artefacts"
    artefact_retention_days: float = Field(default=30.0, description="`pressroom clean` age.")

    # Email
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "pressroom@localhost"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = 30.0
    email_attachment_limit: int = Field(default=10 * 1024 * 1024, description="Bytes.")

    # Webhooks
    webhook_secret: str | None = None
    webhook_allow: str = Field(default="", description="Hosts/CIDRs allowed although private.")
    webhook_timeout: float = 15.0

    # Retries and dead letters (one mechanism for every stage)
    max_attempts: int = Field(default=5, ge=1, description="Deliveries before a dead letter.")
    retry_backoff: str = Field(default="1,5,15,60", description="Seconds between attempts.")
    # Work in progress is kept alive every ack_wait/3 (in-progress acks), so this bounds only
    # how long a message lost in transit (its worker's NATS node died) waits to be redelivered.
    ack_wait: float = Field(default=10.0, description="Seconds before an unacked message returns.")
    shutdown_grace: float = Field(default=30.0, description="Seconds in-flight work may finish.")
    startup_timeout: float = Field(default=120.0, description="Seconds to wait for NATS at start.")

    # Rendering
    render_workers: int = Field(default=1, ge=1, description="PDF worker processes per renderer.")
    render_prefetch: int = Field(
        default=1, ge=0, description="Messages a renderer holds beyond its render processes."
    )
    render_timeout: float = Field(default=120.0, description="Seconds before a render is killed.")
    render_memory_mb: int = Field(default=2048, description="Address-space cap of a render worker.")
    max_output_bytes: int = Field(default=5 * 1024 * 1024, description="Largest artefact.")
    page_size: str = "A4"
    page_orientation: str = "portrait"
    page_margin: str = "18mm"
    asset_allow: str = Field(default="", description="Hosts templates may fetch assets from.")
    render_cache: bool = Field(
        default=True, description="Reuse the artefact of an identical earlier render."
    )
    inline_context_limit: int = Field(default=256 * 1024, description="Bigger goes by reference.")

    # Fetching
    fetch_timeout: float = Field(default=10.0, description="Seconds per source.")
    fetch_deadline: float = Field(default=30.0, description="Seconds for all sources.")
    prometheus_url: str | None = None
    cache_ttl: float = Field(default=300.0, description="Seconds a cached source stays fresh.")

    # Health endpoints (/livez, /readyz): off unless a port is set (0 picks a free one)
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    health_max_pending: int = Field(default=1000, description="More waiting = degraded.")

    # Scheduler
    schedule_grace: float = Field(
        default=3600.0, description="Catch up fires missed this recently."
    )
    schedule_tick: float = Field(default=1.0, description="Seconds between schedule checks.")
    schedule_on_time: float = Field(default=900.0, description="Delivered within = on time.")

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
        config_file = os.environ.get("PRESSROOM_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        return not self.nats_url

    @property
    def bus_url(self) -> str:
        return self.nats_url or f"nats://{EMBEDDED_HOST}:{self.nats_port}"

    @property
    def nats_servers(self) -> list[str]:
        """PRESSROOM_NATS_URL as the list nats-py wants (comma-separated: a cluster)."""
        return _split(self.bus_url)

    @property
    def bus_display(self) -> str:
        """The server list for logs and CLI output: never a password."""
        return ", ".join(redact_url(url) for url in self.nats_servers)

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
    def asset_allow_list(self) -> list[str]:
        return _split(self.asset_allow)
