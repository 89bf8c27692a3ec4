"""Deployment files: compose against the Compose spec, Kubernetes manifests, the sample config."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from services.console.health import config_agreement, out_storage
from shared.adapters.store import plain_http_s3_warning
from shared.schedules import load_schedules
from shared.settings import Settings, config_fingerprint
from tests.helpers import REPO


def test_compose_describes_the_full_stack_with_scalable_healthy_services() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "nats",
        "minio",
        "minio-init",
        "otel-collector",
        "jaeger",
        "mailpit",
        "prometheus",
        "alertmanager",
        "grafana",
        "scheduler",
        "fetcher",
        "renderer",
        "distributor",
    } <= set(services)
    for name in ("scheduler", "fetcher", "renderer", "distributor"):
        service = services[name]
        assert "container_name" not in service  # scaling needs generated names
        assert service["command"] == ["worker", name]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        # Workers start once ops has declared the topology on a healthy, locked bus.
        assert service["depends_on"]["bus-setup"]["condition"] == "service_completed_successfully"
    assert services["bus-setup"]["depends_on"]["nats"]["condition"] == "service_healthy"
    assert services["nats"]["depends_on"]["bus-auth"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["scheduler"]["deploy"]["replicas"] == 2
    for name in ("scheduler", "fetcher", "renderer", "distributor"):
        env = services[name]["environment"]
        # scraped by Prometheus, so not also pushed through the collector (no double count)
        assert env["OTEL_METRICS_EXPORTER"] == "none"
        assert env["PRESSROOM_MONITOR_URL"] == "http://prometheus:9090"
        # Every worker has its identity and trusts the bus's CA — the renderer too, whose
        # environment adds its own keys to the shared ones.
        assert env["PRESSROOM_NATS_CREDENTIALS_DIR"] == "/app/auth"
        assert env["PRESSROOM_NATS_TLS_CA"] == "/app/auth/ca.pem"
        assert env["PRESSROOM_SMTP_HOST"] == "mailpit"
    for name, service in services.items():  # nothing listens on every interface by default
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    nats_conf = (REPO / "deploy/nats/nats.conf").read_text()
    assert "sync_interval: always" in nats_conf and "store_dir: /data" in nats_conf
    assert 'include "../../app/auth/auth.conf"' in nats_conf


def test_kubernetes_manifests_parse_and_run_every_worker_with_probes() -> None:
    docs = [
        d
        for f in sorted((REPO / "deploy/k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "nats") in kinds and ("HorizontalPodAutoscaler", "renderer") in kinds
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {
        *("scheduler", "fetcher", "renderer", "distributor", "ops-console", "console")
    }
    del deployments["ops-console"]  # the operators' CLI, not a worker (test below)
    [console] = deployments.pop("console")["spec"]["template"]["spec"]["containers"]
    assert console["args"][0] == "console"  # the web console, its own service
    assert console["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["worker", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    nats = next(d for d in docs if d["kind"] == "StatefulSet")
    assert nats["spec"]["replicas"] == 3
    config = next(d for d in docs if d["metadata"]["name"] == "nats-config")
    assert "sync_interval: always" in config["data"]["nats.conf"]
    # The services are given every NATS pod, and keep three replicas of every stream.
    env = next(d for d in docs if d["metadata"]["name"] == "pressroom-env")["data"]
    pods = [f"nats-{i}.{nats['spec']['serviceName']}.pressroom.svc" for i in range(3)]
    settings = Settings(nats_url=env["PRESSROOM_NATS_URL"])
    assert settings.nats_servers == [f"nats://{pod}:4222" for pod in pods]
    assert env["PRESSROOM_STREAM_REPLICAS"] == "3"
    assert all(f"nats://{pod}:6222" in config["data"]["nats.conf"] for pod in pods)


def test_the_sample_config_loads_with_the_legacy_schedules(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PRESSROOM_CONFIG", str(REPO / "deploy/pressroom.yaml"))
    settings = Settings()
    names = [s.name for s in load_schedules(settings.schedules)]
    assert names == ["daily-portfolio", "weekly-portfolio", "monthly-portfolio", "sample-folder"]
    # make run's sample schedule is off in the production example
    assert not load_schedules(settings.schedules)[-1].enabled
    assert settings.sources["uptime"]["kind"] == "prometheus"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def test_the_image_copies_only_what_exists_and_is_not_dockerignored() -> None:
    """A COPY of a path that is missing or excluded fails the build (on a real user's machine,
    not here), and the package must come in through the wheel stage only."""
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()]
    for word, args in dockerfile_instructions():
        if word != "COPY" or args.startswith("--from="):
            continue
        *sources, _target = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is missing"
            top = source.split("/")[0]
            assert not any(fnmatch(top, pattern) for pattern in ignored), (source, ignored)
    # nothing the image needs at run time is kept out of the build context
    assert not {"shared", "services", "templates", "deploy", "pyproject.toml"} & set(ignored)


def test_the_image_runs_as_non_root_and_checks_the_health_port_it_sets() -> None:
    instructions = dockerfile_instructions()
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    env = " ".join(args for word, args in final if word == "ENV")
    port = re.search(r"PRESSROOM_HEALTH_PORT=(\d+)", env)
    assert port and Settings(health_port=int(port.group(1))).health_port == int(port.group(1))
    [health] = [args for word, args in final if word == "HEALTHCHECK"]
    assert f"127.0.0.1:{port.group(1)}/readyz" in health
    assert ("ENTRYPOINT", '["pressroom"]') in final
    # compose's healthcheck asks the same endpoint the image's does
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    worker_check = " ".join(compose["services"]["renderer"]["healthcheck"]["test"])
    assert f"127.0.0.1:{port.group(1)}/readyz" in worker_check


class _ComposeOverrideLoader(yaml.SafeLoader):
    """Reads Compose's merge tags (!reset, !override) as plain values."""


_ComposeOverrideLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeOverrideLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)  # type: ignore[arg-type]
    ),
)


def test_the_offline_override_swaps_only_images_the_ci_script_builds() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    override = yaml.load(
        (REPO / "deploy/ci/compose.offline.yaml").read_text(), Loader=_ComposeOverrideLoader
    )
    script = (REPO / "deploy/ci/images.sh").read_text()
    assert set(override["services"]) <= set(compose["services"])
    for name, service in override["services"].items():
        image = service.get("image")
        if image:
            assert image.startswith("localhost/pressroom-offline/"), (name, image)
            repository = image.split(":")[0]
            assert f"{repository}:" in script, f"images.sh does not build {image}"
    # nats: the stand-in carries the version compose.yaml pins
    assert override["services"]["nats"]["image"].endswith(
        ":" + compose["services"]["nats"]["image"].split(":")[1].split("-")[0]
    )
    # Every service without a stand-in is kept out by a profile, not left failing to pull.
    third_party = {n for n, s in compose["services"].items() if "image" in s and "build" not in s}
    for name in third_party:
        service = override["services"].get(name, {})
        assert "image" in service or service.get("profiles"), name
    # The workers keep every shared variable and gain the secrets from the CI env file.
    example = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for name in ("scheduler", "fetcher", "renderer", "distributor", "console"):
        given = set(override["services"][name]["environment"])
        assert given == {k for k in example if k.startswith("PRESSROOM_")}, name


async def test_the_sample_daily_schedule_renders_from_its_data_file(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from services.fetcher.core import gather_context
    from services.fetcher.sources import default_sources
    from services.renderer.core import build_context, make_job
    from services.renderer.pdf import render_job

    monkeypatch.setenv("PRESSROOM_CONFIG", str(REPO / "deploy/pressroom.yaml"))
    settings = Settings(data_files_dir=REPO / "templates/samples", templates_dir=REPO / "templates")
    daily = load_schedules(settings.schedules)[0]
    request = daily.request_for(datetime(2026, 11, 23, 7, tzinfo=UTC))
    context = await gather_context(request, default_sources(), settings)
    job = make_job(settings, request.template, build_context(request, context), ("html",))
    html = render_job(job).html.decode()
    assert "Portfolio Status Report" in html and "Project Cobalt" in html


def test_compose_runs_prometheus_with_the_rules_alertmanager_and_a_provisioned_grafana() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in prometheus["volumes"]}
    assert mounts["/etc/prometheus/rules.yml"] == "./deploy/prometheus/rules.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus-compose.yml"
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    for local in mounts.values():
        assert local.startswith("prometheus-") or (REPO / local).exists(), local
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus-compose.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    [alertmanager] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager.split(":")[0] in services
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    scraped = set(jobs["pressroom"]["dns_sd_configs"][0]["names"])
    assert scraped == {"scheduler", "fetcher", "renderer", "distributor"} and scraped <= set(
        services
    )
    assert jobs["pressroom"]["relabel_configs"][0]["target_label"] == "service"
    am_mounts = [m.split(":")[0] for m in services["alertmanager"]["volumes"]]
    assert "./deploy/prometheus/alertmanager.yml" in am_mounts
    grafana = services["grafana"]
    grafana_mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana_mounts["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    assert (REPO / "deploy/grafana/dashboards/pressroom.json").is_file()
    assert "GRAFANA_ADMIN_PASSWORD" in (REPO / ".env.example").read_text()
    collector = yaml.safe_load((REPO / "deploy/otel/collector.yaml").read_text())
    assert collector["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus"]
    assert "otel-collector:8889" in jobs["otel-collector"]["static_configs"][0]["targets"]


def test_kubernetes_workers_are_scraped_and_get_the_rules_as_a_config_map() -> None:
    import importlib.util

    docs = [
        d
        for f in sorted((REPO / "deploy/k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    workers = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] not in ("ops-console", "console")
    ]
    for deployment in workers:
        notes = deployment["spec"]["template"]["metadata"]["annotations"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
        assert notes == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    rules = yaml.safe_load(maps["pressroom-prometheus-rules"]["data"]["rules.yml"])
    assert rules == yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    [job] = yaml.safe_load(maps["pressroom-prometheus-scrape"]["data"]["pressroom-scrape.yml"])
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"service", "__address__", "__metrics_path__"} <= targets
    assert maps["pressroom-env"]["data"]["OTEL_METRICS_EXPORTER"] == "none"
    spec = importlib.util.spec_from_file_location(
        "k8s_monitoring", REPO / "deploy/k8s/monitoring.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    current = (REPO / "deploy/k8s/monitoring.yaml").read_text()
    assert generator.render() == current, "run: python deploy/k8s/monitoring.py"


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (d["kind"], d["metadata"]["name"]): d
        for f in sorted((REPO / "deploy/k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    }


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def test_kubernetes_mounts_templates_keeps_file_deliveries_and_sends_s3_keys_over_tls() -> None:
    objects = k8s_objects()
    env = objects[("ConfigMap", "pressroom-env")]["data"]
    assert env["PRESSROOM_S3_SECURE"] == "true"
    assert plain_http_s3_warning(Settings(s3_endpoint=env["PRESSROOM_S3_ENDPOINT"])) is None
    # Templates from a ConfigMap, mounted as a folder (a subPath would never see an update).
    renderer = pod(objects[("Deployment", "renderer")])
    [mount] = [m for m in renderer["containers"][0]["volumeMounts"] if m["name"] == "templates"]
    assert mount["mountPath"] == "/app/templates" and "subPath" not in mount
    volumes = {v["name"]: v for v in renderer["volumes"]}
    assert volumes["templates"]["configMap"]["name"] == "pressroom-templates"
    # `file` deliveries on a claim every distributor replica can write to.
    distributor = pod(objects[("Deployment", "distributor")])
    [out] = [m for m in distributor["containers"][0]["volumeMounts"] if m["name"] == "out"]
    assert out["mountPath"] == "/app/out"  # the image's PRESSROOM_OUT_DIR
    claim = {v["name"]: v for v in distributor["volumes"]}["out"]["persistentVolumeClaim"]
    pvc = objects[("PersistentVolumeClaim", claim["claimName"])]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_ops_console_holds_the_ops_seed_only_when_scaled_up_and_may_reach_workers() -> None:
    objects = k8s_objects()
    console = objects[("Deployment", "ops-console")]
    assert console["spec"]["replicas"] == 0
    spec = pod(console)
    secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"pressroom-bus-ops"}
    labels = console["spec"]["template"]["metadata"]["labels"]
    # The NATS policy admits pods with the workers' name label on the client port …
    nats = objects[("NetworkPolicy", "nats")]["spec"]["ingress"]
    client = next(rule for rule in nats if {"port": 4222} in rule["ports"])
    assert any(
        set(peer.get("podSelector", {}).get("matchLabels", {}).items()) <= set(labels.items())
        for peer in client["from"]
        if "podSelector" in peer
    )
    # … and its own policy lets it ask every worker's /readyz.
    policy = objects[("NetworkPolicy", "ops-console")]["spec"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 8080}]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "pressroom"}


def test_compose_mounts_the_shared_config_into_every_worker() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for name in ("scheduler", "fetcher", "renderer", "distributor", "bus-setup"):
        service = compose["services"][name]
        target = service["environment"]["PRESSROOM_CONFIG"]
        mounts = [m for m in service["volumes"] if m.rsplit(":", 2)[1] == target]
        assert mounts == ["${STACK_CONFIG:-./deploy/pressroom.yaml}:" + target + ":ro"], name
    assert (REPO / "deploy/pressroom.yaml").is_file()


def test_the_config_fingerprint_covers_what_services_share_and_nothing_per_process() -> None:
    base = Settings(email_allow="company.com")
    same = config_fingerprint(base)
    assert re.fullmatch(r"[0-9a-f]{12}", same)
    # per process: ports, render processes, memory — not part of the shared config
    assert (
        config_fingerprint(Settings(email_allow="company.com", render_workers=4, health_port=9000))
        == same
    )
    # shared: allow-lists, schedules, retries
    assert config_fingerprint(Settings(email_allow="other.com")) != same
    assert config_fingerprint(Settings(email_allow="company.com", max_attempts=9)) != same
    schedule = {"name": "x", "cron": "0 7 * * *", "request": {"template": "daily.html"}}
    assert config_fingerprint(Settings(email_allow="company.com", schedules=[schedule])) != same
    # Source credentials are the fetcher's alone: given in the environment, only the fetcher
    # keeps them, and the fleet still reads as one configuration (a correct rollout).
    assert (
        config_fingerprint(
            Settings(email_allow="company.com", source_credentials={"gh": {"token": "t"}})
        )
        == same
    )
    # secrets are masked before hashing: the fingerprint says nothing about them
    assert config_fingerprint(
        Settings(email_allow="company.com", s3_secret_key="one")
    ) == config_fingerprint(Settings(email_allow="company.com", s3_secret_key="two"))


def test_config_agreement_names_the_odd_workers_out() -> None:
    assert config_agreement({"a": "f1", "b": "f1"}) == {
        "status": "healthy",
        "detail": "2 worker(s) run config f1",
    }
    differ = config_agreement({"a": "f1", "b": "f2", "c": "f1"})
    assert differ["status"] == "degraded"
    assert differ["detail"].startswith("workers run different configs: f1: a, c; f2: b")


def test_s3_credentials_over_plain_http_to_another_host_are_warned_about() -> None:
    keys = {"s3_access_key": "k", "s3_secret_key": "s"}
    warned = plain_http_s3_warning(Settings(s3_endpoint="minio:9000", s3_secure=False, **keys))
    assert warned and "plain HTTP to minio:9000" in warned and "PRESSROOM_S3_SECURE" in warned
    for quiet in (
        Settings(s3_endpoint="minio:9000", s3_secure=True, **keys),  # TLS
        Settings(s3_endpoint="127.0.0.1:9000", s3_secure=False, **keys),  # loopback
        Settings(s3_endpoint="localhost:9000", s3_secure=False, **keys),
        Settings(s3_endpoint="[::1]:9000", s3_secure=False, **keys),
        Settings(s3_endpoint="minio:9000", s3_secure=False),  # no credentials to leak
        Settings(),  # the embedded object store
    ):
        assert plain_http_s3_warning(quiet) is None, quiet


@pytest.mark.parametrize(
    ("used", "free", "status"),
    [(79, 21, "healthy"), (80, 20, "degraded"), (94, 6, "degraded"), (95, 5, "unhealthy")],
)
def test_health_says_the_reports_folder_fills_up_as_the_storage_alert_does(
    used: int, free: int, status: str, tmp_path: Any
) -> None:
    # The legacy disk check (alert above 80 %), in `pressroom health`.
    usage = SimpleNamespace(used=used * 2**30, free=free * 2**30)
    shown = out_storage(Settings(out_dir=tmp_path), lambda _: usage)  # type: ignore[call-arg]
    assert shown == {"status": status, "detail": f"{tmp_path}: {used}% used, {free}.0 GiB free"}


def test_health_names_a_reports_folder_that_is_not_on_this_host(tmp_path: Any) -> None:
    away = Settings(out_dir=tmp_path / "elsewhere" / "out")  # type: ignore[call-arg]
    shown = out_storage(away)
    assert shown["status"] == "healthy" and "is not here" in shown["detail"]
