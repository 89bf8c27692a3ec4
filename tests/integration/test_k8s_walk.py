"""The Kubernetes walk-through (deploy/k8s/walk.sh) run with the real kubectl against a stand-in
API server on loopback (tests/kubeapi.py: discovery, create/get, namespaces enforced), then
every object it created checked: each Namespace, Secret, ConfigMap, PersistentVolumeClaim and
Deployment exists before what refers to it, and all pass `kubernetes-validate --strict`.

Not exercised here (no cluster can run on this machine): pods starting, NATS forming a
cluster, the bus-setup Job, the network policies being enforced, rollouts (`--no-wait`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO
from tests.kubeapi import Created, StandInApi

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
VALIDATED_VERSIONS = ("1.29.0", "1.37.0")  # the oldest and newest Kubernetes we claim


def walk(api: StandInApi, tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    secrets = tmp / "pressroom.env"
    secrets.write_text(
        "PRESSROOM_S3_ACCESS_KEY=pressroom\nPRESSROOM_S3_SECRET_KEY=not-a-real-key\n"
        "PRESSROOM_WEBHOOK_SECRET=whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEy\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "KUBE"))},
        "PATH": f"{BIN}:{os.environ['PATH']}",  # kubectl and pressroom (bus-secrets.sh)
        "KUBECONFIG": str(api.kubeconfig(tmp / "kubeconfig")),
        "KUBECTL": str(KUBECTL),
        # Schema validation is kubernetes-validate's job below: the stand-in serves no OpenAPI.
        "KUBECTL_APPLY_FLAGS": "--validate=false",
        "PRESSROOM_K8S_SECRETS": str(secrets),
        "PRESSROOM_K8S_BUS_SECRETS": str(tmp / "bus-secrets"),
    }
    return subprocess.run(
        [str(REPO / "deploy/k8s/walk.sh"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )


def references(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """(Kind, name) of every object `obj` needs to exist in its namespace."""
    needed: set[tuple[str, str]] = set()
    if obj["kind"] == "HorizontalPodAutoscaler":
        target = obj["spec"]["scaleTargetRef"]
        needed.add((target["kind"], target["name"]))
    template = obj.get("spec", {}).get("template", {}).get("spec")
    if not template:
        return needed
    for volume in template.get("volumes", []):
        if "configMap" in volume:
            needed.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            needed.add(("Secret", volume["secret"]["secretName"]))
        if "persistentVolumeClaim" in volume:
            needed.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    for container in template.get("containers", []) + template.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                needed.add(("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                needed.add(("Secret", source["secretRef"]["name"]))
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            if "configMapKeyRef" in source:
                needed.add(("ConfigMap", source["configMapKeyRef"]["name"]))
            if "secretKeyRef" in source:
                needed.add(("Secret", source["secretKeyRef"]["name"]))
    return needed


def out_of_order(created: list[Created]) -> list[str]:
    """Every reference to an object that was not created before the one referring to it."""
    problems = []
    seen: set[tuple[str, str | None, str]] = set()
    for item in created:
        if item.namespace is not None and ("Namespace", None, item.namespace) not in seen:
            problems.append(f"{item.kind} {item.name} before namespace {item.namespace}")
        for kind, name in sorted(references(item.body)):
            if (kind, item.namespace, name) not in seen:
                problems.append(f"{item.kind} {item.name} before the {kind} {name} it uses")
        seen.add((item.kind, item.namespace, item.name))
    return problems


def test_the_walk_creates_everything_in_an_order_that_works(tmp_path: Path) -> None:
    with StandInApi() as api:
        result = walk(api, tmp_path, "--no-wait")
        assert result.returncode == 0, result.stdout + result.stderr
        assert api.state.refused == []
        created = list(api.state.created)
    assert out_of_order(created) == []
    kinds = {(c.kind, c.name) for c in created}
    # Everything the manifests ship, plus what the walk generates, reached the server.
    shipped = {
        (d["kind"], d["metadata"]["name"])
        for f in sorted((REPO / "deploy/k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    }
    assert shipped <= kinds, shipped - kinds
    generated = {("Secret", "pressroom"), ("Secret", "nats-auth"), ("Secret", "nats-tls")}
    generated |= {("ConfigMap", "pressroom-config"), ("ConfigMap", "pressroom-templates")}
    generated |= {("Secret", f"pressroom-bus-{role}") for role in ("renderer", "ops")}
    assert generated <= kinds, generated - kinds
    assert created[0].kind == "Namespace"
    # The templates ConfigMap holds the top-level templates the renderer loads.
    templates = next(c for c in created if c.name == "pressroom-templates").body["data"]
    assert {"daily.html", "_base.html"} <= set(templates)
    # What the server stored, generated objects included, is valid for every version we claim.
    stored = tmp_path / "stored.yaml"
    stored.write_text(yaml.safe_dump_all([strip_server_fields(c.body) for c in created]))
    for version in VALIDATED_VERSIONS:
        check = subprocess.run(
            [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(stored)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert check.returncode == 0, check.stdout + check.stderr


def strip_server_fields(body: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in body["metadata"].items()
        if k not in ("uid", "resourceVersion", "creationTimestamp")
    }
    return {**body, "metadata": meta}


def test_the_walk_in_dry_run_changes_nothing(tmp_path: Path) -> None:
    with StandInApi() as api:
        result = walk(api, tmp_path, "--dry-run")
        assert result.returncode == 0, result.stdout + result.stderr
        assert api.state.created == []
    assert "deployment.apps/renderer created (dry run)" in result.stdout
    assert "namespace/pressroom created (dry run)" in result.stdout


def test_the_old_order_fails_and_the_order_check_catches_a_missing_secret(
    tmp_path: Path,
) -> None:
    """What the issue met: nats.yaml first, before the namespace exists, is refused; and a
    Deployment created before the Secret it mounts is reported (the check can fail)."""
    with StandInApi() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        first = subprocess.run(
            [str(KUBECTL), "apply", "--validate=false", "-f", str(REPO / "deploy/k8s/nats.yaml")],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert first.returncode != 0 and 'namespaces "pressroom" not found' in first.stderr
    docs = [d for d in yaml.safe_load_all((REPO / "deploy/k8s/pressroom.yaml").read_text()) if d]
    renderer = next(d for d in docs if d["kind"] == "Deployment")
    namespace = Created("Namespace", None, "pressroom", {"kind": "Namespace"})
    early = Created("Deployment", "pressroom", "renderer", renderer)
    problems = out_of_order([namespace, early])
    assert "Deployment renderer before the Secret pressroom-bus-renderer it uses" in problems
    assert "Deployment renderer before the ConfigMap pressroom-templates it uses" in problems
