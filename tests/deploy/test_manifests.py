"""The Kubernetes manifests under deploy/k8s/ pass kubernetes-validate's schemas (offline, strict);
KEDA's ScaledObject, whose CRD those schemas lack, is checked for shape here. The compose file
runs the same image, queues and settings."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
QUEUES = {"hpaweb-gpu", "hpaweb-cpu", "hpaweb-training"}


def _resources() -> list[tuple[str, dict]]:
    return [
        (path.name, document)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _by_kind(kind: str) -> dict[str, dict]:
    return {resource["metadata"]["name"]: resource for _, resource in _resources() if resource["kind"] == kind}


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    ("file_name", "resource"),
    [(name, resource) for name, resource in _resources() if not resource["apiVersion"].startswith("keda.sh/")],
    ids=lambda value: value if isinstance(value, str) else f"{value['kind']}/{value['metadata']['name']}",
)
def test_each_manifest_passes_the_kubernetes_schema(file_name, resource):
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(path.name for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def test_web_and_workers_share_one_image_and_the_gpu_worker_asks_for_a_gpu():
    deployments = _by_kind("Deployment")
    assert set(deployments) == {"hpaweb-web", "hpaweb-worker-cpu", "hpaweb-worker-gpu", "hpaweb-beat"}
    assert {_container(deployment)["image"] for deployment in deployments.values()} == {"hpaweb:1.1.0"}
    gpu = _container(deployments["hpaweb-worker-gpu"])["resources"]
    assert gpu["requests"]["nvidia.com/gpu"] == 1 and gpu["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in _container(deployments["hpaweb-worker-cpu"])["resources"]["requests"]


def test_web_probes_use_the_health_endpoints_and_the_service_selects_the_web_pods():
    web = _by_kind("Deployment")["hpaweb-web"]
    container = _container(web)
    assert (container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]) == (
        "/livez",
        "/healthz",
    )
    service = _by_kind("Service")["hpaweb-web"]
    assert service["spec"]["selector"] == web["spec"]["template"]["metadata"]["labels"]


def test_workers_consume_the_named_queues_given_in_both_the_command_and_the_environment():
    consumed = set()
    for name in ("hpaweb-worker-cpu", "hpaweb-worker-gpu"):
        container = _container(_by_kind("Deployment")[name])
        queues = container["command"][container["command"].index("-Q") + 1]
        assert {"name": "CELERY_QUEUES", "value": queues} in container["env"], name
        consumed |= set(queues.split(","))
    assert consumed == QUEUES


def test_postgres_and_redis_are_external_services_the_settings_name():
    services = _by_kind("Service")
    assert services["hpaweb-postgres"]["spec"]["type"] == services["hpaweb-redis"]["spec"]["type"] == "ExternalName"
    config = _by_kind("ConfigMap")["hpaweb-config"]["data"]
    assert config["CELERY_BROKER_URL"].startswith("redis://hpaweb-redis:")
    assert "@hpaweb-postgres:" in _by_kind("Secret")["hpaweb-secrets"]["stringData"]["DATABASE_URL"]


def test_keda_scaled_objects_scale_the_workers_on_their_redis_queues():
    deployments = _by_kind("Deployment")
    scaled = _by_kind("ScaledObject")
    assert set(scaled) == {"hpaweb-worker-cpu", "hpaweb-worker-gpu"}
    for name, scaled_object in scaled.items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "cooldownPeriod", "triggers"}
        target = deployments[spec["scaleTargetRef"]["name"]]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        container = _container(target)
        consumed = set(container["command"][container["command"].index("-Q") + 1].split(","))
        env_names = {"HPAWEB_REDIS_ADDRESS"}  # from the ConfigMap every container loads
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis", name
            metadata = trigger["metadata"]
            assert metadata["addressFromEnv"] in env_names and metadata["listName"] in consumed, name
            assert int(metadata["listLength"]) >= 1 and all(isinstance(value, str) for value in metadata.values())
    assert _by_kind("ConfigMap")["hpaweb-config"]["data"]["HPAWEB_REDIS_ADDRESS"] == "hpaweb-redis:6379"
    # /healthz needs a live worker: the CPU worker never scales to zero.
    assert scaled["hpaweb-worker-cpu"]["spec"]["minReplicaCount"] >= 1


def test_compose_runs_the_same_image_queues_and_settings():
    compose = yaml.safe_load((REPO_ROOT / "docker" / "compose.yml").read_text())
    services = compose["services"]
    app_services = {name: service for name, service in services.items() if name not in ("db", "redis")}
    assert set(app_services) == {"web", "worker-cpu", "worker-gpu", "beat"}
    assert {service["image"] for service in app_services.values()} == {"hpaweb:1.1.0"}
    config = _by_kind("ConfigMap")["hpaweb-config"]["data"]
    for name, service in app_services.items():
        assert set(service["environment"]) >= {"DJANGO_SETTINGS_MODULE", "DJANGO_SECRET_KEY", "DATABASE_URL"}, name
        assert service["environment"]["DJANGO_SETTINGS_MODULE"] == config["DJANGO_SETTINGS_MODULE"]
    for name, queues in (("worker-cpu", "hpaweb-cpu"), ("worker-gpu", "hpaweb-gpu,hpaweb-training")):
        assert f"-Q {queues}" in services[name]["command"] and services[name]["environment"]["CELERY_QUEUES"] == queues


def test_one_beat_runs_the_sweeper_beside_the_workers():
    beat = _by_kind("Deployment")["hpaweb-beat"]
    assert beat["spec"]["replicas"] == 1
    assert _container(beat)["command"][:4] == ["celery", "-A", "hpaweb", "beat"]
