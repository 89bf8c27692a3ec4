"""Where a source may fetch from, and which credentials go with it.

The trust model: what the operator configured (named sources in the config file,
PRESSROOM_PROMETHEUS_URL, an adapter's public default such as the GitHub API, the origins a
credential is bound to) is trusted; a URL a request supplies must match PRESSROOM_SOURCE_ALLOW,
is checked on the address it resolves to, and is then connected to by that address.
Credentials are attached only to the origins they are bound to — pagination links included.
Credentials and named sources are also bound to the calling systems (tenants) that may use
them (`tenants:` in the config file); the operator's own identities may use them all.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from shared import jsonsafe
from shared.adapters import egress
from shared.adapters.egress import Destination, Origin
from shared.bus.identity import DEFAULT_TENANT
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings

# What a request may set on a source named in the config file: presentation only. Everything
# else (URL, repo, endpoint, query, params, credentials …) is the operator's.
REQUEST_OPTIONS = frozenset({"cache", "merge"})
PUBLIC_DEFAULTS = {"github": "https://api.github.com"}
MAX_PATH_DECODES = 3  # %25252e: more layers than this is refused, not guessed at


@dataclass(frozen=True)
class Credential:
    """A `source_credentials` entry, bound to the origins it may be sent to."""

    name: str
    origins: tuple[Origin, ...]
    token: str | None = None
    # Path prefixes the credential is bound to, besides the origin ("" = the whole origin).
    prefixes: tuple[str, ...] = ("",)
    user: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def auth_headers(self, scheme: str = "bearer") -> dict[str, str]:
        headers = {str(k): str(v) for k, v in self.headers.items()}
        if self.user and self.token:
            pair = f"{self.user}:{self.token}".encode()
            headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode())
        elif self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return headers


def credential_for(source: Source, settings: Settings) -> Credential | None:
    """The credential the source names by its config name (`credentials: NAME`), or None.

    A request never gets a credential it did not name; the credential's origins come from
    its own `api_url` / `base_url` / `url` / `origins`, or the public default of the kind.
    """
    name = (source.model_extra or {}).get("credentials")
    if not name:
        return None
    entry = settings.source_credentials.get(str(name))
    if entry is None:
        known = ", ".join(sorted(settings.source_credentials)) or "none configured"
        raise PermanentError(
            f"source '{source.name}': unknown credentials '{name}' (known: {known})"
        )
    urls = [entry[k] for k in ("api_url", "base_url", "url") if entry.get(k)]
    urls += list(entry.get("origins") or [])
    if not urls and source.kind in PUBLIC_DEFAULTS:
        urls = [PUBLIC_DEFAULTS[source.kind]]
    if not urls:
        raise PermanentError(
            f"source '{source.name}': credentials '{name}' name no origin to be sent to "
            "(set its base_url or origins in the config file)"
        )
    try:
        origins = tuple(egress.origin_of(str(u)) for u in urls)
    except PermanentError as error:
        raise PermanentError(f"credentials '{name}': {error.reason}") from None
    prefixes = tuple(sorted({urlsplit(str(u)).path.rstrip("/") for u in urls}))
    return Credential(
        name=str(name),
        origins=origins,
        prefixes=prefixes,
        token=str(entry["token"]) if entry.get("token") else None,
        user=str(entry["user"]) if entry.get("user") else None,
        headers=dict(entry.get("headers") or {}),
    )


def credential_base(credential: Credential | None) -> str | None:
    """The first origin of a credential, as a base URL (where a source goes by default)."""
    return str(credential.origins[0]) if credential else None


async def destination(
    url: str,
    source: Source,
    settings: Settings,
    *,
    configured: bool,
    credential: Credential | None,
) -> Destination:
    """The checked place to fetch `url` from; a PermanentError naming the setting if refused."""
    what = f"source '{source.name}'"
    check_bound(credential, url, what)
    if configured or credential is not None:
        return egress.trusted(url)
    return await egress.check_source(url, settings.source_allow_list, what=what)


async def get_json(
    source: Source,
    target: Destination,
    *,
    settings: Settings,
    credential: Credential | None = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    error_body: bool = False,
) -> tuple[Any, egress.Reply]:
    """GET a checked destination and decode its JSON within the size and depth limits."""
    what = f"source '{source.name}'"
    sent = dict(headers or {})
    if credential is not None and target.origin in credential.origins:
        sent.update(credential.auth_headers())
    reply = await egress.send(
        "GET",
        target,
        what=what,
        timeout=settings.fetch_timeout,
        max_bytes=settings.fetch_max_bytes,
        params=params,
        headers=sent,
        follow_redirects=True,
        # A same-origin hop still carries the headers: it must stay inside the bound prefix.
        check_redirect=lambda hop: check_bound(credential, hop, what),
    )
    problem = egress.status_error(f"{what}: {reply.url}", reply.status, reply.headers)
    if problem is not None and not (error_body and reply.status in (400, 422)):
        raise problem
    return jsonsafe.loads(reply.body, what=f"{what}: the answer of {reply.url}"), reply


def check_bound(credential: Credential | None, url: str, what: str) -> None:
    """A credential goes only to its origins and path prefixes (pagination links included)."""
    origin = egress.origin_of(url)
    path = plain_path(url, what)
    if credential is None:
        return
    if origin not in credential.origins:
        bound = ", ".join(str(o) for o in credential.origins)
        raise PermanentError(
            f"{what}: credentials '{credential.name}' are bound to {bound}, not {origin}; "
            "they are never sent anywhere else"
        )
    if not any(
        not prefix or path == prefix or path.startswith(prefix + "/")
        for prefix in credential.prefixes
    ):
        raise PermanentError(
            f"{what}: credentials '{credential.name}' are bound to the path(s) "
            f"{', '.join(credential.prefixes)} of {origin}, not {path}"
        )


def plain_path(url: str, what: str) -> str:
    """The URL's path, refusing dot segments that would climb out of a prefix once some server
    on the way normalises it: raw, percent-encoded (once or several times: `%252e%252e`),
    or with path parameters (`..;`, which Tomcat and Jetty read as `..`)."""
    path = urlsplit(url).path
    decoded = path
    for _ in range(MAX_PATH_DECODES):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        raise PermanentError(f"{what}: the URL path {path!r} is percent-encoded too many times")
    segments = [segment.split(";", 1)[0].strip() for segment in decoded.split("/")]
    if any(segment in (".", "..") for segment in segments) or "\\" in decoded:
        raise PermanentError(f"{what}: the URL path {path!r} has '.' or '..' segments")
    return path.rstrip("/")


def may_use(entry: Mapping[str, Any], tenant: str | None) -> bool:
    """Whether a calling system may use a credential or named source of the config file.

    The operator's own identities (the scheduler, the CLI, the console, an unauthenticated
    bus: `tenant` None) use everything. A calling system uses what lists it in `tenants:`
    ("*": every calling system). Without `tenants:` an entry is the operator's and the single
    `publisher`'s of a deployment without `--publisher NAME` (as before tenants existed): a
    named calling system never gets another's credentials by the operator forgetting a line.
    """
    if tenant is None:
        return True
    bound = entry.get("tenants")
    if bound is None:
        return tenant == DEFAULT_TENANT
    return "*" in bound or tenant in bound


def _known(entries: Mapping[str, Mapping[str, Any]], tenant: str | None) -> str:
    """The names a tenant may use, for an error that says what exists (never another's)."""
    usable = sorted(n for n, e in entries.items() if may_use(e, tenant))
    return ", ".join(usable) or ("none configured" if tenant is None else "none")


def check_available(source: Source, settings: Settings, tenant: str | None) -> None:
    """Refuse, before anything is sent or read from the cache, credentials the request's
    calling system may not use (a named source's own binding is checked by expand_named)."""
    name = (source.model_extra or {}).get("credentials")
    if not name or tenant is None:
        return
    _usable(
        settings.source_credentials,
        str(name),
        tenant,
        unknown=f"source '{source.name}': unknown credentials '{name}'",
        refused=f"source '{source.name}': credentials '{name}' are not available to {tenant}",
    )


def _usable(
    entries: Mapping[str, Mapping[str, Any]],
    name: str,
    tenant: str | None,
    *,
    unknown: str,
    refused: str,
) -> Mapping[str, Any]:
    """The config file's entry `name` when `tenant` may use it; else a PermanentError, `unknown`
    with the names it may use (never another's), or `refused`."""
    entry = entries.get(name)
    if entry is None:
        raise PermanentError(f"{unknown} (known: {_known(entries, tenant)})")
    if not may_use(entry, tenant):
        raise PermanentError(refused)
    return entry


def check_file_path(
    source: Source, settings: Settings, tenant: str | None, configured: bool
) -> None:
    """A named calling system's own `file` source (one it wrote into its request) reads only
    its folder of the data folder, `PRESSROOM_DATA_FILES_DIR/<tenant>/`, as its `file`
    deliveries write only in theirs: the rest is read through the operator's named sources,
    each bound by `tenants:` (a path written out would pass a binding by)."""
    if source.kind != "file" or configured or tenant is None or tenant == DEFAULT_TENANT:
        return
    root = settings.data_files_dir.resolve()
    rel = str((source.model_extra or {}).get("path", ""))
    if not (root / rel).resolve().is_relative_to((root / tenant).resolve()):
        raise PermanentError(
            f"source '{source.name}': a calling system's own file source reads only its "
            f"folder of the data folder ({tenant}/…); the operator's named sources read the rest"
        )


def binding_warnings(settings: Settings, tenants: Iterable[str] = ()) -> list[str]:
    """What `pressroom config check` says about tenant bindings, when they matter: once the
    deployment has named calling systems (`tenants`, from the seeds) or binds anything.

    An unbound credential or source is the operator's (and the single `publisher`'s) only;
    a source bound to tenants that its credentials are not bound to fails for them."""
    entries = [("credentials", n, e, "have") for n, e in settings.source_credentials.items()]
    entries += [("source", n, e, "has") for n, e in settings.sources.items()]
    named = sorted(t for t in tenants if t != DEFAULT_TENANT)
    if not named and not any("tenants" in e for _, _, e, _ in entries):
        return []
    warnings = [
        f"{what} '{name}' {verb} no `tenants:`: only the operator's identities and the single "
        "`publisher` may use them, no calling system named with --publisher "
        "(add `tenants: [NAME, ...]`, or `tenants: []` to say so)"
        for what, name, entry, verb in entries
        if "tenants" not in entry
    ]
    for name, spec in settings.sources.items():
        entry = settings.source_credentials.get(str(spec.get("credentials") or ""))
        if entry is None or "tenants" not in spec:
            continue
        left_out = [t for t in spec["tenants"] if not may_use(entry, t)]
        if left_out:
            warnings.append(
                f"source '{name}' is available to {', '.join(left_out)} but its credentials "
                f"'{spec['credentials']}' are not: its fetches for them will fail"
            )
    return warnings


def expand_named(
    source: Source, settings: Settings, *, tenant: str | None = None
) -> tuple[Source, bool]:
    """A source that names a config-file source (`source: NAME`) becomes that source.

    Returns (source, configured): configured sources are the operator's and trusted. A request
    may set only presentation options (`cache`, `merge`): what is fetched, from where and with
    which credentials stays as the operator wrote it. `tenant`: the calling system that asked
    (None: the operator); a source not available to it is refused.
    """
    extra = dict(source.model_extra or {})
    ref = source.source
    if ref is None:
        return source, False
    spec = _usable(
        settings.sources,
        str(ref),
        tenant,
        unknown=f"source '{source.name}': no source '{ref}' in the config file",
        refused=f"source '{source.name}' is not available to {tenant}",
    )
    changed = sorted(k for k in extra if k not in REQUEST_OPTIONS and extra[k] != spec.get(k))
    if source.kind not in ("", spec.get("kind")):
        changed.append("kind")
    if changed:
        raise PermanentError(
            f"source '{source.name}': {', '.join(changed)} of config source '{ref}' "
            f"cannot be changed by a request (it may set only {', '.join(sorted(REQUEST_OPTIONS))})"
        )
    merged = {**spec, **{k: v for k, v in extra.items() if k in REQUEST_OPTIONS}}
    return Source.model_validate({**merged, "name": source.name}), True
