"""Bus identities: one NATS user per role with least-privilege permissions, TLS, and how each
Pressroom process finds its own credentials.

`pressroom bus auth --out DIR` writes `auth.conf` (a nats-server include: one nkey user per role)
and `<role>.nk` seeds; the server enforces the permissions, not our code. Every role gets its
own reply-inbox prefix, so no role can read the replies (messages, KV values, objects) meant
for another.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import PermanentError

if TYPE_CHECKING:
    from shared.settings import Settings

ROLES = ("publisher", "fetcher", "renderer", "distributor", "scheduler", "ops")
STAGE_ROLES = ("fetcher", "renderer", "distributor")
JS = "$JS.API"

# Names from shared.bus / shared.events, repeated as strings so this module stays importable
# by the CLI without the bus (checked equal by a unit test).
STREAM, DLQ_STREAM, ADVISORY_STREAM = "PRESSROOM", "PRESSROOM_DLQ", "PRESSROOM_ADVISORIES"
LEDGER, DELIVERIES, CACHE, SCHEDULES = (
    "pressroom_ledger",
    "pressroom_deliveries",
    "pressroom_cache",
    "pressroom_schedules",
)
OBJECTS = "pressroom_artefacts"
ALL_STREAMS = (
    STREAM,
    DLQ_STREAM,
    ADVISORY_STREAM,
    *(f"KV_{b}" for b in (LEDGER, DELIVERIES, SCHEDULES, CACHE)),
    f"OBJ_{OBJECTS}",
)
CONSUMES = {
    "fetcher": "report.requested",
    "renderer": "data.ready",
    "distributor": "report.rendered",
}
PRODUCES = {
    "fetcher": "data.ready",
    "renderer": "report.rendered",
    "distributor": "report.delivered",
}


def inbox_prefix(role: str) -> str:
    return f"_INBOX_{role}"


def _stream_read(stream: str) -> list[str]:
    return [f"{JS}.STREAM.INFO.{stream}"]


def _topology_read() -> list[str]:
    """Every stream's and bucket's info: a service checks at start-up that they exist."""
    return [subject for name in ALL_STREAMS for subject in _stream_read(name)]


def _msg_get(stream: str) -> list[str]:
    return [
        f"{JS}.STREAM.MSG.GET.{stream}",
        f"{JS}.DIRECT.GET.{stream}",
        f"{JS}.DIRECT.GET.{stream}.>",
    ]


def _consumer(stream: str, durable: str) -> list[str]:
    """Pull from, ack on, inspect and (re)declare one durable consumer — nothing else."""
    return [
        f"{JS}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        f"{JS}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
    ]


def _kv(bucket: str, *, write: bool) -> list[str]:
    stream = f"KV_{bucket}"
    subjects = _stream_read(stream) + _msg_get(stream)
    return subjects + ([f"$KV.{bucket}.>"] if write else [])


def _objects(*, write: bool) -> list[str]:
    stream = f"OBJ_{OBJECTS}"
    # Reading an object streams its chunks through a short-lived ordered consumer.
    subjects = (
        _stream_read(stream)
        + _msg_get(stream)
        + [
            f"{JS}.STREAM.NAMES",  # nats-py looks the stream up by subject
            f"{JS}.CONSUMER.CREATE.{stream}",
            f"{JS}.CONSUMER.CREATE.{stream}.>",
            f"{JS}.CONSUMER.DELETE.{stream}.>",
        ]
    )
    if write:  # replacing an object purges its old chunks
        subjects += [f"$O.{OBJECTS}.>", f"{JS}.STREAM.PURGE.{stream}"]
    return subjects


def permissions(role: str) -> dict[str, list[str]]:
    """What the server lets `role` publish and subscribe to."""
    inbox = [f"{inbox_prefix(role)}.>"]
    if role == "publisher":
        # Other systems: ask for reports and hear how they ended; nothing else.
        return {
            "publish": ["report.requested"],
            "subscribe": ["report.delivered", "report.failed", *inbox],
        }
    if role in STAGE_ROLES:
        consumes = CONSUMES[role]
        publish = [
            PRODUCES[role],
            "report.failed",
            f"dlq.{consumes}",
            *_consumer(STREAM, role),
            *_consumer(ADVISORY_STREAM, f"{role}-crashes"),
            *_topology_read(),
            *_msg_get(STREAM),  # the original of a message that crashed every worker
            f"{JS}.INFO",  # account storage, for the storage gauge
            *_kv(LEDGER, write=True),
            *_objects(write=True),  # artefacts, big contexts, big dead-letter bodies
        ]
        if role in ("fetcher", "renderer"):
            publish += _kv(CACHE, write=True)
        if role == "distributor":
            publish += _kv(DELIVERIES, write=True)
        return {"publish": publish, "subscribe": inbox}
    if role == "scheduler":
        publish = [
            "report.requested",
            *_topology_read(),
            *_msg_get(STREAM),  # was a scheduled id taken by someone else's message?
            *_kv(SCHEDULES, write=True),
            *_kv(LEDGER, write=False),
        ]
        return {"publish": publish, "subscribe": inbox}
    if role == "ops":
        # The operators' CLI: administration of Pressroom's streams, consumers and buckets,
        # dead letters, the ledger, artefacts, replays. Still not `$JS.>` wholesale.
        publish = [
            f"{JS}.>",
            "$KV.>",
            "$O.>",
            "report.requested",
            "data.ready",
            "report.rendered",
            "dlq.>",
        ]
        return {"publish": publish, "subscribe": ["report.>", "dlq.>", *inbox]}
    raise ValueError(f"unknown role '{role}' (known: {', '.join(ROLES)})")


# ---- generating identities -----------------------------------------------------------------
def new_user_seed() -> str:
    import nkeys

    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    import nkeys

    key: bytes = nkeys.from_seed(seed.encode()).public_key
    return key.decode()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _conf_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


@dataclass
class Generated:
    folder: Path
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def generate(
    out: Path,
    *,
    tls: bool = False,
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    rotate: bool = False,
) -> Generated:
    """Write auth.conf and one seed per role (kept if present, unless `rotate`); with `tls`,
    a CA and a server certificate for `hosts` (kept if present and covering them)."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    result = Generated(out.resolve())
    users = []
    for role in ROLES:
        seed_file = out / f"{role}.nk"
        if seed_file.is_file() and not rotate:
            seed = seed_file.read_text().strip()
            result.kept.append(seed_file.name)
        else:
            seed = new_user_seed()
            _write_private(seed_file, (seed + "\n").encode())
            result.created.append(seed_file.name)
        allowed = permissions(role)
        users.append(
            f"    # {role}\n"
            f'    {{nkey: "{public_key(seed)}", permissions: {{\n'
            f"      publish: {{allow: {_conf_list(allowed['publish'])}}},\n"
            f"      subscribe: {{allow: {_conf_list(allowed['subscribe'])}}}\n"
            "    }}"
        )
    parts = [
        "# Written by `pressroom bus auth`: include it from nats-server.conf. One nkey user per\n"
        "# Pressroom role, least privilege; no anonymous access.\n",
        "authorization {\n  users: [\n" + ",\n".join(users) + "\n  ]\n}\n",
    ]
    if tls:
        made = write_certificates(out, list(hosts), rotate=rotate)
        (result.created if made else result.kept).extend(
            ["ca.pem", "server-cert.pem", "server-key.pem"]
        )
        folder = out.resolve()
        parts.append(
            "tls {\n"
            f'  cert_file: "{folder / "server-cert.pem"}"\n'
            f'  key_file: "{folder / "server-key.pem"}"\n'
            f'  ca_file: "{folder / "ca.pem"}"\n'
            "  timeout: 5\n"
            "}\n"
        )
    (out / "auth.conf").write_text("\n".join(parts))
    os.chmod(out / "auth.conf", 0o600)
    result.created.append("auth.conf")
    return result


def write_certificates(out: Path, hosts: list[str], *, rotate: bool = False) -> bool:
    """A private CA and a server certificate for `hosts`; False when valid ones were kept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_file, cert_file, key_file = out / "ca.pem", out / "server-cert.pem", out / "server-key.pem"
    if not rotate and all(p.is_file() for p in (ca_file, cert_file, key_file)):
        current = x509.load_pem_x509_certificate(cert_file.read_bytes())
        names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = {str(n) for n in names.get_values_for_type(x509.DNSName)} | {
            str(n) for n in names.get_values_for_type(x509.IPAddress)
        }
        fresh = current.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        if set(hosts) <= covered and fresh:
            return False
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pressroom bus CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_file,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return True


# ---- connecting as a role ------------------------------------------------------------------
AuthKind = Literal["anonymous", "nkey", "creds", "password"]


@dataclass(frozen=True)
class Identity:
    """How a process authenticates to NATS; `describe()` never shows a secret."""

    role: str
    kind: AuthKind = "anonymous"
    path: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        if self.kind == "nkey":
            return f"nkey seed {self.path}"
        if self.kind == "creds":
            return f"credentials {self.path}"
        if self.kind == "password":
            return f"user '{self.user}'"
        return "anonymous"

    def nats_kwargs(self) -> dict[str, Any]:
        """Options for nats.connect (the CLI, the scheduler, tests)."""
        options: dict[str, Any] = {"inbox_prefix": inbox_prefix(self.role)}
        if self.kind == "nkey":
            options["nkeys_seed"] = str(self.path)
        elif self.kind == "creds":
            options["user_credentials"] = str(self.path)
        elif self.kind == "password":
            options["user"], options["password"] = self.user, self.password
        if self.tls is not None:
            options["tls"] = self.tls
        return options

    def faststream_security(self) -> Any:
        """The same for FastStream's NatsBroker (`security=`)."""
        from faststream.nats.security import (
            NatsCredentials,
            NatsNKey,
            NatsSecurity,
            NatsUserPassword,
        )

        if self.kind == "nkey":
            return NatsNKey(str(self.path), ssl_context=self.tls)
        if self.kind == "creds":
            return NatsCredentials(str(self.path), ssl_context=self.tls)
        if self.kind == "password":
            return NatsUserPassword(str(self.user), str(self.password), ssl_context=self.tls)
        return NatsSecurity(ssl_context=self.tls) if self.tls is not None else None


def embedded_auth_dir(settings: Settings) -> Path:
    return settings.data_dir / "auth"


def identity(settings: Settings, role: str) -> Identity:
    """Which credentials `role` uses, from the settings (first match wins):
    PRESSROOM_NATS_NKEY, PRESSROOM_NATS_CREDENTIALS_DIR/<role>.nk, PRESSROOM_NATS_CREDS,
    PRESSROOM_NATS_USER/_PASSWORD, and for the embedded server the identities `pressroom up`
    generated in the data folder."""
    context = tls_context(settings)
    if settings.nats_nkey is not None:
        seed = _readable(settings.nats_nkey, "PRESSROOM_NATS_NKEY")
        # A seed from `pressroom bus auth` is named after its role: use that role's inbox.
        named = seed.stem if seed.stem in ROLES else role
        return Identity(named, "nkey", seed, tls=context)
    if settings.nats_credentials_dir is not None:
        path = settings.nats_credentials_dir / f"{role}.nk"
        return Identity(
            role, "nkey", _readable(path, "PRESSROOM_NATS_CREDENTIALS_DIR"), tls=context
        )
    if settings.nats_creds is not None:
        return Identity(
            role, "creds", _readable(settings.nats_creds, "PRESSROOM_NATS_CREDS"), tls=context
        )
    if settings.nats_user is not None:
        return Identity(role, "password", user=settings.nats_user,
                        password=settings.nats_password or "", tls=context)  # fmt: skip
    if settings.embedded:
        seed = embedded_auth_dir(settings) / f"{role}.nk"
        if seed.is_file():
            return Identity(role, "nkey", seed, tls=context)
    return Identity(role, tls=context)


def _readable(path: Path, setting: str) -> Path:
    if not path.is_file():
        raise PermanentError(f"{setting}: no credentials file at '{path}'")
    return path


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.nats_tls_ca is None and settings.nats_tls_cert is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert is not None:
        if settings.nats_tls_key is None:
            raise PermanentError("PRESSROOM_NATS_TLS_CERT needs PRESSROOM_NATS_TLS_KEY too")
        context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    return context


# ---- refusals, said once and clearly -------------------------------------------------------
class BusRefused(PermanentError):
    """The NATS server refused this identity, or one of its actions: retrying will not help."""


@dataclass
class Refusals:
    """Permission violations the server reported (asynchronously, through error_cb).

    A JetStream request the server refuses is never answered: it would look like a timeout and
    be retried for ever. With this record, the timeout becomes a permanent, named refusal.
    """

    identity: Identity | None = None
    seen: dict[str, float] = field(default_factory=dict)
    # Workers stop on an authentication failure (the supervisor restarts them, the log says
    # why) instead of reconnecting with refused credentials for ever.
    fatal_on_auth: bool = False

    def stop_process(self) -> None:
        import signal

        if self.fatal_on_auth:
            self.fatal_on_auth = False  # once
            os.kill(os.getpid(), signal.SIGTERM)

    def record(self, error: BaseException) -> str | None:
        text = str(error)
        lowered = text.lower()
        if "permissions violation" in lowered:
            subject = text.split(" to ", 1)[1].strip().strip('"') if " to " in text else text
            self.seen[subject.lower()] = time.monotonic()  # nats-py lowercases the text
            who = self.identity.describe() if self.identity else "this identity"
            return f"NATS refused {who}: {text.strip()}"
        if "authorization violation" in lowered or "authentication" in lowered:
            who = self.identity.describe() if self.identity else "this identity"
            return f"NATS refused {who}: {text.strip()} (check the credentials)"
        return None

    def refused(self, subject: str) -> bool:
        return subject.lower() in self.seen

    def last(self, within: float = 30.0) -> str | None:
        recent = [s for s, when in self.seen.items() if time.monotonic() - when <= within]
        if not recent:
            return None
        who = self.identity.describe() if self.identity else "this identity"
        return f"{who} may not use {', '.join(sorted(recent))} (NATS permissions violation)"


REFUSALS = Refusals()
