"""Bus identities generated: one NATS user per role with least-privilege permissions, the tenants'
accounts, and TLS certificates.

`pressroom bus auth --out DIR [--publisher NAME ...]` writes `auth.conf` (a nats-server include)
and `<role>.nk` seeds; the server enforces the permissions, not our code. Every name a permission
grants comes from shared/bus/names.py and shared/events.py, so a renamed stream or subject cannot
leave a stale grant behind. How a process finds its own identity: shared/bus/identity.py.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.bus.names import ADMISSION_BUCKET as ADMISSION
from shared.bus.names import ADVISORY_STREAM, DLQ_STREAM, FETCHER, INTAKE_CRASHES, STAGES, STREAM
from shared.bus.names import CACHE_BUCKET as CACHE
from shared.bus.names import DELIVERIES_BUCKET as DELIVERIES
from shared.bus.names import LEDGER_BUCKET as LEDGER
from shared.bus.names import OBJECT_BUCKET as OBJECTS
from shared.bus.names import RENDER_CACHE_BUCKET as RENDER_CACHE
from shared.bus.names import SCHEDULES_BUCKET as SCHEDULES
from shared.bus.names import STUDIO_BUCKET as STUDIO
from shared.events import LANED_SUBJECTS as LANED
from shared.events import LANES, PRIORITIES, REPORT_DELIVERED, REPORT_FAILED, REPORT_REQUESTED

if TYPE_CHECKING:
    pass
from shared.bus.identity import (
    DEFAULT_TENANT,
    ROLES,
    SERVICE_ROLES,
    SERVICES_ACCOUNT,
    STAGE_ROLES,
    checked_tenant,
    inbox_prefix,
    tenant_account,
    tenant_of_role,
    tenant_outcomes,
    tenant_requests,
    tenant_role,
)

JS = "$JS.API"


# Every stream a role may read the info of, by the names the topology declares them with.
ALL_STREAMS = (
    STREAM,
    DLQ_STREAM,
    ADVISORY_STREAM,
    *(f"KV_{bucket}" for bucket in (LEDGER, DELIVERIES, SCHEDULES, ADMISSION, CACHE, RENDER_CACHE)),
    f"OBJ_{OBJECTS}",
)  # not the studio's bucket: the renderer alone reads its info (_objects)
REQUESTED = REPORT_REQUESTED
OUTCOMES = (REPORT_DELIVERED, REPORT_FAILED)
CONSUMES = {stage.name: stage.consumes for stage in STAGES.values()}
PRODUCES = {stage.name: stage.produces for stage in STAGES.values()}


def _laned(subject: str) -> list[str]:
    """A subject and its lanes' subjects (`data.ready`, `lane.*.data.ready`)."""
    return [subject, f"lane.*.{subject}"] if subject in LANED else [subject]


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


def _flow_control(stream: str) -> list[str]:
    """The replies an ordered consumer (an object's chunks, a listing of a store or bucket)
    owes the server's flow-control requests: without them the server stops sending once a
    listing outgrows its window, and the listing waits for ever (a renderer pruning its studio
    records stalled after some thousands of reports)."""
    return [f"$JS.FC.{stream}.>"]


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
    subjects = _stream_read(stream) + _msg_get(stream) + _flow_control(stream)
    return subjects + ([f"$KV.{bucket}.>"] if write else [])


def _objects(*, write: bool, bucket: str = OBJECTS) -> list[str]:
    stream = f"OBJ_{bucket}"
    # Reading an object streams its chunks through a short-lived ordered consumer.
    subjects = (
        _stream_read(stream)
        + _msg_get(stream)
        + _flow_control(stream)
        + [
            f"{JS}.STREAM.NAMES",  # nats-py looks the stream up by subject
            f"{JS}.CONSUMER.CREATE.{stream}",
            f"{JS}.CONSUMER.CREATE.{stream}.>",
            f"{JS}.CONSUMER.DELETE.{stream}.>",
        ]
    )
    if write:  # replacing an object purges its old chunks
        subjects += [f"$O.{bucket}.>", f"{JS}.STREAM.PURGE.{stream}"]
    return subjects


def _durables(role: str) -> list[str]:
    return [role, *(f"{role}-{lane}" for lane in LANES)]


def permissions(role: str, tenants: Iterable[str] = ()) -> dict[str, list[str]]:
    """What the server lets `role` publish and subscribe to; the fetcher also reads each of
    the calling systems' (`tenants`) own consumers."""
    inbox = [f"{inbox_prefix(role)}.>"]
    if role == "publisher" or tenant_of_role(role) is not None:
        # Other systems (each in its own account): ask for reports and hear how their own
        # ended; nothing else.
        # `report.requested.<lane>`: a lane of its own, past any flood on the plain subject.
        lanes = [f"{REQUESTED}.{lane}" for lane in LANES]
        return {"publish": [REQUESTED, *lanes], "subscribe": [*OUTCOMES, *inbox]}
    if role in STAGE_ROLES:
        consumes = CONSUMES[role]
        durables = _durables(role)  # one consumer per lane
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
            # Each calling system's requests through consumers of its own (shared/stage/callers)
            # (and the single `publisher`'s, retired or not: what it sent before is still read)
            named = sorted({*tenants, DEFAULT_TENANT})
            callers = [FETCHER.of_tenant(t, lane).durable for t in named for lane in PRIORITIES]
            publish += [s for durable in callers for s in _consumer(STREAM, durable)]
            publish += _consumer(ADVISORY_STREAM, INTAKE_CRASHES)
            # Whether renders wait (a requester past its share may use idle renderers).
            publish += [f"{JS}.CONSUMER.INFO.{STREAM}.{d}" for d in _durables("renderer")]
            publish += _kv(CACHE, write=True)
        if role == "renderer":
            publish += _kv(RENDER_CACHE, write=True)
            publish += _objects(write=True, bucket=STUDIO)  # the studio's recorded payloads
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
            "$JS.FC.>",  # flow control of its listings (every bucket, the object store)
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
    # Imported here: only `bus auth` makes keys (start-up time of every command).
    import nkeys

    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode()


def public_key(seed: str) -> str:
    # Imported here: only `bus auth` makes keys (start-up time of every command).
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
    retired: list[str] = field(default_factory=list)  # seeds left out of auth.conf now


def tenants_in(out: Path, publishers: Iterable[str] = ()) -> list[str]:
    """The calling systems of a folder: those named now and those whose seeds are there
    already; `publisher` (publisher.nk) only while nobody is named — the single calling system
    of a deployment, which the operator's unbound credentials and sources serve. Once systems
    are named, each is a tenant like the others and publisher.nk is retired."""
    named = {checked_tenant(p) for p in publishers}
    for seed in out.glob(f"{DEFAULT_TENANT}-*.nk"):
        tenant = tenant_of_role(seed.stem)
        if tenant is not None:
            named.add(tenant)
    if not named:
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
    services = ",\n".join(
        _user(r, seeds[r], permissions(r, tenants), indent) for r in SERVICE_ROLES
    )
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
    if DEFAULT_TENANT not in result.tenants and (out / f"{DEFAULT_TENANT}.nk").is_file():
        result.retired.append(f"{DEFAULT_TENANT}.nk")
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
    # Imported here: only `bus auth --tls` makes certificates (start-up time of every command).
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
