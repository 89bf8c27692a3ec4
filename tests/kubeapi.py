"""A stand-in Kubernetes API server on loopback: enough of the API for `kubectl apply`.

No real API server can be installed here (no registry ships one), so deploy/k8s/walk.sh runs
against this: discovery (/api, /apis, each group's resource list), and create / get / patch of
objects, kept in memory in the order they were created. Like a real API server, it refuses an
object in a namespace that does not exist yet (404 `namespaces "x" not found`) and an object
that already exists (409), and a `?dryRun=All` request stores nothing. It does not run
anything: no controllers, no pods, no status, no admission beyond that.

    python -m tests.kubeapi KUBECONFIG_FILE     # serves until interrupted; writes a kubeconfig
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# group/version → [(plural, Kind, namespaced)]
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("pods", "Pod", True),
    ],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass
class Created:
    kind: str
    namespace: str | None
    name: str
    body: dict[str, Any]


@dataclass
class ApiState:
    objects: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    created: list[Created] = field(default_factory=list)  # in order
    refused: list[str] = field(default_factory=list)  # messages of refused creates
    lock: threading.Lock = field(default_factory=threading.Lock)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/version":
        return {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "platform": "linux/amd64"}
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }
    if path == "/apis":
        groups = []
        for group_version in RESOURCES:
            if "/" not in group_version:
                continue
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    group_version = path.removeprefix("/api/").removeprefix("/apis/")
    if group_version in RESOURCES and path in (f"/api/{group_version}", f"/apis/{group_version}"):
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": VERBS,
                }
                for plural, kind, namespaced in RESOURCES[group_version]
            ],
        }
    return None


def _locate(path: str) -> tuple[str, str, bool, str | None, str | None] | None:
    """(group/version, Kind, namespaced, namespace, name) of an object or collection path."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group_version, rest = "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    for plural, kind, namespaced in RESOURCES.get(group_version, []):
        if rest and rest[0] == plural:
            name = rest[1] if len(rest) > 1 else None
            return group_version, kind, namespaced, namespace, name
    if not namespace and rest[:1] == ["namespaces"] and group_version == "v1":
        return "v1", "Namespace", False, None, rest[1] if len(rest) > 1 else None
    return None


class _Handler(BaseHTTPRequestHandler):
    state: ApiState

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        data: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        return data

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        found = _discovery(url.path)
        if found is not None:
            return self._send(200, found)
        where = _locate(url.path)
        if where is None or where[4] is None:
            return self._send(404, _status(404, "NotFound", f"{url.path}: not served here"))
        _, kind, _, namespace, name = where
        with self.state.lock:
            stored = self.state.objects.get((kind, namespace, name))
        if stored is None:
            return self._send(404, _status(404, "NotFound", f'{kind.lower()} "{name}" not found'))
        return self._send(200, stored)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        where = _locate(url.path)
        if where is None:
            return self._send(404, _status(404, "NotFound", f"{url.path}: not served here"))
        _, kind, namespaced, namespace, _ = where
        body = self._body()
        meta = body.setdefault("metadata", {})
        name = meta.get("name", "")
        dry = "dryRun" in parse_qs(url.query)
        with self.state.lock:
            if namespaced and ("Namespace", None, namespace) not in self.state.objects:
                message = f'namespaces "{namespace}" not found'
                self.state.refused.append(f"{kind} {name}: {message}")
                return self._send(404, _status(404, "NotFound", message))
            if (kind, namespace, name) in self.state.objects:
                message = f'{kind.lower()} "{name}" already exists'
                return self._send(409, _status(409, "AlreadyExists", message))
            meta.update(
                uid=f"standin-{len(self.state.created)}",
                resourceVersion=str(len(self.state.created) + 1),
                creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            if namespaced:
                meta["namespace"] = namespace
            if not dry:
                self.state.objects[(kind, namespace, name)] = body
                self.state.created.append(Created(kind, namespace, name, body))
        return self._send(201, body)

    def do_PATCH(self) -> None:  # a second `apply` of the same object: nothing to change here
        url = urlsplit(self.path)
        where = _locate(url.path)
        if where is None or where[4] is None:
            return self._send(404, _status(404, "NotFound", f"{url.path}: not served here"))
        _, kind, _, namespace, name = where
        self._body()
        with self.state.lock:
            stored = self.state.objects.get((kind, namespace, name))
        if stored is None:
            return self._send(404, _status(404, "NotFound", f'{kind.lower()} "{name}" not found'))
        return self._send(200, stored)


class StandInApi:
    """The server in a thread; `kubeconfig(path)` writes a kubeconfig that points at it."""

    def __init__(self) -> None:
        self.state = ApiState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandInApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
            "current-context": "standin",
        }
        path.write_text(json.dumps(config))
        return path


if __name__ == "__main__":
    with StandInApi() as api:
        written = api.kubeconfig(Path(sys.argv[1]))
        print(f"stand-in API server at {api.url}; KUBECONFIG={written}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
