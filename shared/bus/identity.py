"""Bus identities: one NATS user per role with least-privilege permissions, TLS, and how each
Pressroom process finds its own credentials.

`pressroom bus auth --out DIR [--publisher NAME ...]` writes `auth.conf` (a nats-server include)
and `<role>.nk` seeds; the server enforces the permissions, not our code. Every role gets its
own reply-inbox prefix, so no role can read the replies (messages, KV values, objects) meant
for another.

Two kinds of NATS account keep callers apart (NATS accounts are separate subject spaces):
- `PRESSROOM`: the services, the scheduler, the ops CLI and JetStream (every stream and bucket).
- `TENANT_<name>`, one per calling system (`publisher-<name>.nk`; `publisher.nk` is the tenant
  `publisher`): it sees only `report.requested` (a service import that lands in PRESSROOM as
  `report.requested.<name>` — so the server says who published, and a body cannot) and its own
  outcomes (`tenant.<name>.report.>` of PRESSROOM, imported as `report.>`). JetStream answers a
  publish on its reply subject; through a service import that answer goes back into the
  tenant's own account, which holds no stream or bucket, so a reply subject such as
  `$KV.pressroom_ledger.<id>` writes nothing anywhere.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
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
SERVICE_ROLES = ("fetcher", "renderer", "distributor", "scheduler", "ops")
JS = "$JS.API"
SERVICES_ACCOUNT = "PRESSROOM"
DEFAULT_TENANT = "publisher"
# A tenant's name is a NATS subject token and part of an account name: short and plain.
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

# Names from shared.bus.topology / shared.events, repeated as strings so this module stays
# importable
# by the CLI without the bus (checked equal by a unit test).
STREAM, DLQ_STREAM, ADVISORY_STREAM = "PRESSROOM", "PRESSROOM_DLQ", "PRESSROOM_ADVISORIES"
LEDGER, DELIVERIES, CACHE, SCHEDULES, RENDER_CACHE, ADMISSION = (
    "pressroom_ledger",
    "pressroom_deliveries",
    "pressroom_cache",
    "pressroom_schedules",
    "pressroom_render_cache",
    "pressroom_admission",
)
OBJECTS = "pressroom_artefacts"
ALL_STREAMS = (
    STREAM,
    DLQ_STREAM,
    ADVISORY_STREAM,
    *(f"KV_{b}" for b in (LEDGER, DELIVERIES, SCHEDULES, ADMISSION, CACHE, RENDER_CACHE)),
    f"OBJ_{OBJECTS}",
)
REQUESTED = "report.requested"
OUTCOMES = ("report.delivered", "report.failed")
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
LANES = ("interactive", "bulk")  # a stage's other consumers, each on `lane.<lane>.<subject>`
LANED = ("report.requested", "data.ready", "report.rendered")


def _laned(subject: str) -> list[str]:
    """A subject and its lanes' subjects (`data.ready`, `lane.*.data.ready`)."""
    return [subject, f"lane.*.{subject}"] if subject in LANED else [subject]


def inbox_prefix(role: str) -> str:
    return f"_INBOX_{role}"


def tenant_role(tenant: str) -> str:
    """The seed's stem (and inbox) of a tenant: `publisher`, or `publisher-<name>`."""
    return DEFAULT_TENANT if tenant == DEFAULT_TENANT else f"{DEFAULT_TENANT}-{tenant}"


def tenant_of_role(role: str) -> str | None:
    """The tenant a seed's stem names (`publisher` → publisher, `publisher-x` → x), or None."""
    if role == DEFAULT_TENANT:
        return DEFAULT_TENANT
    prefix = f"{DEFAULT_TENANT}-"
    if role.startswith(prefix) and TENANT_NAME.match(role[len(prefix) :]):
        return role[len(prefix) :]
    return None


def tenant_account(tenant: str) -> str:
    return f"TENANT_{tenant}"


def tenant_requests(tenant: str) -> str:
    """Where a tenant's `report.requested` lands in the services' account."""
    return f"{REQUESTED}.{tenant}"


def tenant_outcomes(tenant: str) -> str:
    """The services' subjects a tenant hears as `report.delivered` / `report.failed`."""
    return f"tenant.{tenant}.report"


def checked_tenant(name: str) -> str:
    if not TENANT_NAME.match(name):
        raise PermanentError(
            f"publisher name '{name}': use 1-40 of a-z, 0-9, '-', '_' (starting with a letter "
            "or digit); it names a NATS account and a subject token"
        )
    return name


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
    if role == "publisher" or tenant_of_role(role) is not None:
        # Other systems (each in its own account): ask for reports and hear how their own
        # ended; nothing else.
        # `report.requested.<lane>`: a lane of its own, past any flood on the plain subject.
        lanes = [f"{REQUESTED}.{lane}" for lane in LANES]
        return {"publish": [REQUESTED, *lanes], "subscribe": [*OUTCOMES, *inbox]}
    if role in STAGE_ROLES:
        consumes = CONSUMES[role]
        durables = [role, *(f"{role}-{lane}" for lane in LANES)]  # one consumer per lane
        publish = [
            *_laned(PRODUCES[role]),
            "report.failed",
            "tenant.*.report.failed",  # a tenant's copy of its own outcome
            *(f"dlq.{subject}" for subject in _laned(consumes)),
            *(s for durable in durables for s in _consumer(STREAM, durable)),
            *(s for durable in durables for s in _consumer(ADVISORY_STREAM, f"{durable}-crashes")),
            *_topology_read(),
            *_msg_get(STREAM),  # the original of a message that crashed every worker
            f"{JS}.INFO",  # account storage, for the storage gauge
            *_kv(LEDGER, write=True),
            *_kv(ADMISSION, write=True),  # reports each requester has queued
            *_objects(write=True),  # artefacts, big contexts, big dead-letter bodies
        ]
        if role == "fetcher":  # requests come in here and go on to their lanes
            publish += [f"dlq.{REQUESTED}.*", f"dlq.{REQUESTED}.*.*", f"lane.*.{REQUESTED}"]
            publish += _kv(CACHE, write=True)
        if role == "renderer":
            publish += _kv(RENDER_CACHE, write=True)
        if role == "distributor":
            publish += ["tenant.*.report.delivered", *_kv(DELIVERIES, write=True)]
        return {"publish": publish, "subscribe": inbox}
    if role == "scheduler":
        # No read of the main stream: a scheduled message id is keyed with the scheduler's
        # own seed (services/scheduler), so nobody else can take it first.
        publish = [
            REQUESTED,
            *_topology_read(),
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
            REQUESTED,
            f"{REQUESTED}.*",  # a tenant's dead letter goes back to where it came from
            f"{REQUESTED}.*.*",  # … also one it sent to a lane
            "data.ready",
            "report.rendered",
            *(f"lane.*.{subject}" for subject in LANED),  # replays of a lane's dead letters
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
    tenants: list[str] = field(default_factory=list)


def tenants_in(out: Path, publishers: Iterable[str] = ()) -> list[str]:
    """The calling systems of a folder: those named now, those whose seeds are there already,
    and `publisher` when it is there or nobody was named (the single publisher of before)."""
    named = {checked_tenant(p) for p in publishers}
    for seed in out.glob(f"{DEFAULT_TENANT}-*.nk"):
        tenant = tenant_of_role(seed.stem)
        if tenant is not None:
            named.add(tenant)
    if (out / f"{DEFAULT_TENANT}.nk").is_file() or not named:
        named.add(DEFAULT_TENANT)
    return sorted(named)


def _user(role: str, seed: str, allowed: dict[str, list[str]], indent: str) -> str:
    return (
        f"{indent}# {role}\n"
        f'{indent}{{nkey: "{public_key(seed)}", permissions: {{\n'
        f"{indent}  publish: {{allow: {_conf_list(allowed['publish'])}}},\n"
        f"{indent}  subscribe: {{allow: {_conf_list(allowed['subscribe'])}}}\n"
        f"{indent}}}}}"
    )


def accounts_config(seeds: dict[str, str], tenants: Iterable[str]) -> str:
    """The `accounts` block: the services' account with JetStream, one account per tenant."""
    tenants = list(tenants)
    indent = "      "
    services = ",\n".join(_user(r, seeds[r], permissions(r), indent) for r in SERVICE_ROLES)
    exports = []
    for tenant in tenants:
        account = tenant_account(tenant)
        exports += [
            f'      {{service: "{tenant_requests(tenant)}", accounts: ["{account}"]}}',
            *(
                f'      {{service: "{tenant_requests(tenant)}.{lane}", accounts: ["{account}"]}}'
                for lane in LANES
            ),
            f'      {{stream: "{tenant_outcomes(tenant)}.>", accounts: ["{account}"]}}',
        ]
    blocks = [
        f"  {SERVICES_ACCOUNT}: {{\n    jetstream: enabled\n"
        f"    users: [\n{services}\n    ]\n"
        "    exports: [\n" + "\n".join(exports) + "\n    ]\n  }"
    ]
    for tenant in tenants:
        role = tenant_role(tenant)
        blocks.append(
            f'  "{tenant_account(tenant)}": {{\n'
            f"    users: [\n{_user(role, seeds[role], permissions(role), indent)}\n    ]\n"
            "    imports: [\n"
            f'      {{service: {{account: "{SERVICES_ACCOUNT}", '
            f'subject: "{tenant_requests(tenant)}"}}, to: "{REQUESTED}"}}\n'
            + "".join(
                f'      {{service: {{account: "{SERVICES_ACCOUNT}", '
                f'subject: "{tenant_requests(tenant)}.{lane}"}}, to: "{REQUESTED}.{lane}"}}\n'
                for lane in LANES
            )
            + f'      {{stream: {{account: "{SERVICES_ACCOUNT}", '
            f'subject: "{tenant_outcomes(tenant)}.>"}}, to: "report.>"}}\n'
            "    ]\n  }"
        )
    return "accounts {\n" + "\n".join(blocks) + "\n}\n"


def generate(
    out: Path,
    *,
    tls: bool = False,
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    rotate: bool = False,
    publishers: Iterable[str] = (),
) -> Generated:
    """Write auth.conf, one seed per role and one per calling system (`publishers`, kept with
    those already there; kept if present, unless `rotate`); with `tls`, a CA and a server
    certificate for `hosts` (kept if present and covering them)."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    result = Generated(out.resolve())
    result.tenants = tenants_in(out, publishers)
    seeds: dict[str, str] = {}
    for role in [*SERVICE_ROLES, *(tenant_role(t) for t in result.tenants)]:
        seed_file = out / f"{role}.nk"
        if seed_file.is_file() and not rotate:
            seed = seed_file.read_text().strip()
            result.kept.append(seed_file.name)
        else:
            seed = new_user_seed()
            _write_private(seed_file, (seed + "\n").encode())
            result.created.append(seed_file.name)
        seeds[role] = seed
    parts = [
        "# Written by `pressroom bus auth`: include it from nats-server.conf. One nkey user per\n"
        "# Pressroom role, least privilege, in the services' account; one account per calling\n"
        "# system (it sees only report.requested and its own outcomes); no anonymous access.\n",
        accounts_config(seeds, result.tenants),
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


def secret_of(who: Identity) -> bytes:
    """Material only this identity (and its replicas) holds: its seed, credentials or password;
    empty without one."""
    if who.kind in ("nkey", "creds") and who.path is not None:
        return who.path.read_bytes().strip()
    if who.kind == "password":
        return (who.password or "").encode()
    return b""


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
        named = seed.stem if seed.stem in ROLES or tenant_of_role(seed.stem) else role
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
