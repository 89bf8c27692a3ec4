"""Deployment files: compose against the Compose spec, Kubernetes manifests, the sample config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from services.scheduler.cron import load_schedules
from shared.settings import Settings
from tests.helpers import REPO


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(REPO / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
        assert service["depends_on"]["nats"]["condition"] == "service_healthy"
    assert services["scheduler"]["deploy"]["replicas"] == 2
    nats_conf = (REPO / "deploy/nats/nats.conf").read_text()
    assert "sync_interval: always" in nats_conf and "store_dir: /data" in nats_conf


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
    assert set(deployments) == {"scheduler", "fetcher", "renderer", "distributor"}
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
    assert names == ["daily-portfolio", "weekly-portfolio", "monthly-portfolio"]
    assert settings.sources["uptime"]["kind"] == "prometheus"


def test_dockerfile_runs_workers_as_non_root_with_a_healthcheck() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "USER pressroom" in dockerfile and "HEALTHCHECK" in dockerfile
    assert 'ENTRYPOINT ["pressroom"]' in dockerfile and "/readyz" in dockerfile
    assert "libpango" in dockerfile


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
