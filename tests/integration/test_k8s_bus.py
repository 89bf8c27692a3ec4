"""The Kubernetes manifests' locked bus, run for real: the NATS config from deploy/k8s/nats.yaml
with the Secrets deploy/k8s/bus-secrets.sh makes, laid out as the pods mount them.

No Kubernetes here: the ConfigMap's nats.conf runs in a real nats-server (ports moved to
loopback, paths under a temporary root), `kubectl` is a stand-in that prints what it was asked
to create, and each worker's Secret is mounted as a folder — then a worker connects with only
what its pod gets, and an attacker tries without.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from services.console.embedded import free_port, nats_server_binary, port_open
from shared.bus.identity import Identity, identity
from shared.settings import Settings
from tests.helpers import REPO, eventually, quiet

pytestmark = pytest.mark.integration
POD = "nats-0.nats-cluster.pressroom.svc"  # a name on the server certificate, as pods use it

FAKE_KUBECTL = """#!/usr/bin/env python3
# Stand-in for `kubectl -n NS create secret generic NAME --from-file=KEY=PATH ... -o yaml`.
import base64, sys, yaml
args = sys.argv[1:]
name = args[args.index("generic") + 1]
data = {}
for arg in args:
    if arg.startswith("--from-file="):
        key, path = arg.removeprefix("--from-file=").split("=", 1)
        data[key] = base64.b64encode(open(path, "rb").read()).decode()
print(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": name, "namespace": args[args.index("-n") + 1]},
                      "data": data}), end="")
"""


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "deploy/k8s" / name).read_text()) if d]


@pytest.fixture(scope="module")
def cluster_secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """What bus-secrets.sh hands to kubectl: every Secret with its files."""
    work = tmp_path_factory.mktemp("k8s-secrets")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL.replace("python3", sys.executable, 1))
    (bin_dir / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["PUBLISHERS"] = "billing crm"  # two calling systems, each its own account
    result = subprocess.run(
        ["bash", str(REPO / "deploy/k8s/bus-secrets.sh"), str(work / "keys")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    secrets = {}
    for doc in yaml.safe_load_all((work / "keys/secrets.yaml").read_text()):
        if doc:
            data = {k: base64.b64decode(v) for k, v in doc["data"].items()}
            secrets[doc["metadata"]["name"]] = data
    # The calling systems' seeds are handed over outside the cluster, never as a pod's Secret.
    secrets["calling systems"] = {
        f.name: f.read_bytes() for f in (work / "keys/identities").glob("publisher*.nk")
    }
    return secrets


def mount(secret: dict[str, bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in secret.items():
        (folder / key).write_bytes(value)
        (folder / key).chmod(0o400)
    return folder


@pytest.fixture(scope="module")
def k8s_nats(
    tmp_path_factory: pytest.TempPathFactory, cluster_secrets: dict[str, dict[str, bytes]]
) -> Any:
    """nats-0 of the StatefulSet: its ConfigMap and Secrets, on loopback."""
    root = tmp_path_factory.mktemp("k8s-nats")
    [config_map] = [d for d in docs("nats.yaml") if d["kind"] == "ConfigMap"]
    conf = config_map["data"]["nats.conf"]
    port, monitor = free_port(), free_port()
    conf = conf.replace("0.0.0.0:4222", f"127.0.0.1:{port}")
    conf = conf.replace("0.0.0.0:8222", f"127.0.0.1:{monitor}")
    conf = conf.replace("/etc/nats-tls/", f"{root}/etc/nats-tls/")
    conf = conf.replace("store_dir: /data", f"store_dir: {root}/data")
    # The other pods do not exist here: this server runs alone (the cluster block left out).
    conf, found = re.subn(r"\ncluster \{.*?\n\}\n", "\n", conf, flags=re.S)
    assert found == 1
    (root / "etc/nats").mkdir(parents=True)
    (root / "etc/nats/nats.conf").write_text(conf)
    mount(cluster_secrets["nats-auth"], root / "etc/nats-auth")
    mount(cluster_secrets["nats-tls"], root / "etc/nats-tls")
    log = (root / "nats.log").open("wb")
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(root / "etc/nats/nats.conf")],
        env={**os.environ, "POD_NAME": "nats-0"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    async def listening() -> bool:
        assert proc.poll() is None, (root / "nats.log").read_text()
        return port_open("127.0.0.1", port)

    import asyncio

    asyncio.run(eventually(listening, timeout=30))
    yield f"nats://localhost:{port}", root
    proc.terminate()
    proc.wait(timeout=15)
    log.close()


def pod_settings(url: str, bus_folder: Path) -> Settings:
    """A worker pod's bus settings: the ConfigMap's, with its Secret mounted at bus_folder."""
    [env_map] = [d for d in docs("pressroom.yaml") if d["metadata"]["name"] == "pressroom-env"]
    env = env_map["data"]
    assert env["PRESSROOM_NATS_CREDENTIALS_DIR"] == "/etc/pressroom-bus"
    assert env["PRESSROOM_NATS_TLS_CA"] == "/etc/pressroom-bus/ca.pem"
    return Settings(
        nats_url=url, nats_credentials_dir=bus_folder, nats_tls_ca=bus_folder / "ca.pem"
    )


def test_each_worker_pod_mounts_only_its_own_identity() -> None:
    pressroom = docs("pressroom.yaml")
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in pressroom
        if d["kind"] in ("Deployment", "Job")
    }
    assert set(pods) == {
        *("fetcher", "renderer", "distributor", "scheduler"),
        *("bus-setup", "ops-console"),  # the two that act as ops
    }
    for name, pod in pods.items():
        role = "ops" if name in ("bus-setup", "ops-console") else name
        [bus] = [v for v in pod["volumes"] if v["name"] == "bus"]
        assert bus["secret"]["secretName"] == f"pressroom-bus-{role}"
        assert pod["securityContext"]["runAsNonRoot"] is True
    policies = {d["metadata"]["name"]: d for d in docs("network.yaml")}
    [clients, routes, _monitor] = policies["nats"]["spec"]["ingress"]
    assert clients["ports"] == [{"port": 4222}] and routes["ports"] == [{"port": 6222}]
    assert routes["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]


def test_the_secrets_hold_one_seed_each(cluster_secrets: dict[str, dict[str, bytes]]) -> None:
    for role in ("fetcher", "renderer", "distributor", "scheduler", "ops"):
        secret = cluster_secrets[f"pressroom-bus-{role}"]
        assert set(secret) == {f"{role}.nk", "ca.pem"}, role
        assert secret[f"{role}.nk"].startswith(b"SU")  # an nkey user seed
    # The server's own include carries users only: its TLS block is nats.yaml's (pod paths).
    assert b"tls {" not in cluster_secrets["nats-auth"]["auth.conf"]
    assert set(cluster_secrets["nats-tls"]) == {"ca.crt", "tls.crt", "tls.key"}


async def test_a_worker_connects_with_its_pods_secret_and_nobody_without(
    k8s_nats: Any, cluster_secrets: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    url, _root = k8s_nats
    folder = mount(cluster_secrets["pressroom-bus-renderer"], tmp_path / "renderer-pod")
    settings = pod_settings(url, folder)
    who = identity(settings, "renderer")
    nc = await nats.connect(url, error_cb=quiet, tls_hostname=POD, **who.nats_kwargs())
    assert nc.is_connected
    await nc.close()

    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    attempts: list[dict[str, Any]] = [
        {},  # anonymous, in plain text
        {"tls": context, "tls_hostname": POD},  # anonymous over TLS
        # the renderer's seed without TLS
        Identity("renderer", "nkey", folder / "renderer.nk").nats_kwargs(),
    ]
    for options in attempts:
        with pytest.raises(Exception) as refused:
            await nats.connect(
                url,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                connect_timeout=3,
                error_cb=quiet,
                **options,
            )
        if "tls" in options:
            assert "authorization" in str(refused.value).lower()
    # The renderer's seed does not make it ops: it may not create a stream.
    nc = await nats.connect(url, error_cb=quiet, tls_hostname=POD, **who.nats_kwargs())
    try:
        from nats.js import api

        js = nc.jetstream(timeout=3)
        with pytest.raises(Exception):  # noqa: B017 - a permissions violation goes unanswered
            await js.add_stream(api.StreamConfig(name="CANARY", subjects=["canary.>"]))
    finally:
        await nc.close()
    ops = mount(cluster_secrets["pressroom-bus-ops"], tmp_path / "ops-pod")
    as_ops = identity(pod_settings(url, ops), "ops").nats_kwargs()
    nc = await nats.connect(url, error_cb=quiet, tls_hostname=POD, **as_ops)
    try:
        names = [s.config.name async for s in _streams(nc)]
        assert "CANARY" not in names
    finally:
        await nc.close()


async def _streams(nc: Any) -> Any:
    for info in await nc.jetstream(timeout=5).streams_info():
        yield info


async def test_each_calling_system_gets_its_own_account_on_the_k8s_bus(
    k8s_nats: Any, cluster_secrets: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    url, _root = k8s_nats
    seeds = cluster_secrets["calling systems"]
    assert set(seeds) == {"publisher-billing.nk", "publisher-crm.nk"}
    conf = cluster_secrets["nats-auth"]["auth.conf"].decode()
    assert '"TENANT_billing"' in conf and '"TENANT_crm"' in conf
    folder = mount(seeds | {"ca.pem": cluster_secrets["nats-tls"]["ca.crt"]}, tmp_path / "billing")
    who = identity(
        Settings(nats_url=url, nats_nkey=folder / "publisher-billing.nk",
                 nats_tls_ca=folder / "ca.pem"),
        "publisher",
    )  # fmt: skip
    assert who.role == "publisher-billing"
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    nc = await nats.connect(url, error_cb=on_error, tls_hostname=POD, **who.nats_kwargs())
    try:
        await nc.publish("report.requested.crm", b"{}")  # posing as another calling system
        await nc.flush()

        async def refused() -> bool:
            return any("permissions violation" in e and "report.requested.crm" in e for e in errors)

        await eventually(refused, timeout=30)
    finally:
        await nc.close()
