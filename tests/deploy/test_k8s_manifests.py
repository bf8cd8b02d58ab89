"""deploy/k8s cannot rot silently: every manifest parses, carries the fields its kind needs, and the pieces
still point at each other (selectors, ports, probe paths, HPA target, env names the service really reads)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import CONFIG_FILENAME, ONNX_FILENAME
from service.config import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
IMAGE_UID = 10001  # Dockerfile: useradd --uid 10001

KNOWN_KINDS = {
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}


def load_all() -> dict[Path, list[dict[str, Any]]]:
    out = {}
    for path in sorted(K8S.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        out[path] = docs
    return out


MANIFESTS = load_all()
DOCS = [(path, doc) for path, docs in MANIFESTS.items() for doc in docs]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def deployments() -> list[dict[str, Any]]:
    return of_kind("Deployment")


def main_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


_SUFFIX = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value: str | int | float) -> float:
    """Kubernetes resource quantity -> number (cores or bytes)."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    number, suffix = match.groups()
    assert suffix == "" or suffix in _SUFFIX, f"unknown quantity suffix in {value!r}"
    return float(number) * _SUFFIX.get(suffix, 1)


def test_the_manifest_folder_has_every_piece_the_issue_asks_for() -> None:
    kinds = {doc["kind"] for _, doc in DOCS}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"} <= kinds
    gpu = [
        d
        for d in deployments()
        if "nvidia.com/gpu" in main_container(d["spec"]["template"]["spec"])["resources"]["limits"]
    ]
    assert len(gpu) == 1, "one GPU variant of the Deployment"


@pytest.mark.parametrize(
    ("path", "doc"), DOCS, ids=[f"{p.relative_to(K8S)}:{d.get('kind')}" for p, d in DOCS]
)
def test_every_manifest_has_api_version_kind_and_name(path: Path, doc: dict[str, Any]) -> None:
    assert (doc.get("apiVersion"), doc.get("kind")) in KNOWN_KINDS, path
    if doc["kind"] != "Kustomization":
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]


def test_each_kustomization_lists_existing_files_and_every_sibling_manifest() -> None:
    for path, docs in MANIFESTS.items():
        if path.name != "kustomization.yaml":
            continue
        (kustomization,) = docs
        listed = {(path.parent / r).resolve() for r in kustomization["resources"]}
        assert all(p.exists() for p in listed), listed
        siblings = {p.resolve() for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert siblings == listed, f"{path}: not listed {siblings - listed}"


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_deployment_selects_its_pods_and_probes_grpc_readiness_and_http_liveness(
    deployment: dict[str, Any],
) -> None:
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    container = main_container(pod)
    assert container["image"].startswith("fastweights-serve:")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001}
    env = env_of(container)
    assert int(env["FWS_PORT"]) == ports["http"]
    assert int(env["FWS_GRPC_PORT"]) == ports["grpc"]
    assert env["FWS_HOST"] == "0.0.0.0"

    # Readiness: the standard gRPC health service (SERVING exactly when /v2/health/ready is 200, see
    # service/grpc/server.py) on the gRPC port, which a gRPC probe names by number; liveness over HTTP.
    ready = container["readinessProbe"]["grpc"]
    assert ready["port"] == ports["grpc"] and ready.get("service", "") == ""
    live = container["livenessProbe"]["httpGet"]
    assert live["path"] == LIVE_PATH and live["port"] in ports
    assert container["startupProbe"]["httpGet"]["path"] == LIVE_PATH

    # Graceful shutdown: the pod is given longer than the preStop pause plus the service's own drain.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + float(env["FWS_DRAIN_TIMEOUT_S"])


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_deployment_requests_and_limits_are_set_and_consistent(deployment: dict[str, Any]) -> None:
    resources = main_container(deployment["spec"]["template"]["spec"])["resources"]
    for resource in ("cpu", "memory"):
        request, limit = quantity(resources["requests"][resource]), quantity(resources["limits"][resource])
        assert 0 < request <= limit, (resource, request, limit)


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_deployment_runs_as_the_images_non_root_user_on_a_read_only_root(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    container = main_container(pod)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_image_uid_is_the_one_the_manifests_run_as() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"--uid {IMAGE_UID}" in dockerfile


def test_every_fws_variable_in_the_manifests_is_a_real_service_setting() -> None:
    fields = {f"FWS_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for _, doc in DOCS:
        if doc["kind"] == "Deployment":
            containers = doc["spec"]["template"]["spec"]["containers"]
        elif doc["kind"] == "InferenceService":
            containers = doc["spec"]["predictor"].get("containers", [])
        else:
            continue
        for container in containers:
            used |= {name for name in env_of(container) if name.startswith("FWS_")}
    assert used, "no FWS_ settings found"
    assert used <= fields, f"not service settings: {sorted(used - fields)}"


def test_gpu_deployment_reserves_a_gpu_and_asks_for_cuda() -> None:
    (gpu,) = [d for d in deployments() if d["metadata"]["name"].endswith("-gpu")]
    container = main_container(gpu["spec"]["template"]["spec"])
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert env_of(container)["FWS_DEVICE"] == "cuda"
    assert container["image"].endswith("-gpu")
    (cpu,) = [d for d in deployments() if not d["metadata"]["name"].endswith("-gpu")]
    assert env_of(main_container(cpu["spec"]["template"]["spec"]))["FWS_DEVICE"] == "cpu"


def test_service_routes_to_every_deployments_pods_on_the_http_and_grpc_ports() -> None:
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "fastweights-serve"]
    selector = service["spec"]["selector"]
    for deployment in deployments():
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert ports["http"]["targetPort"] == "http"
    assert ports["grpc"]["targetPort"] == "grpc" and ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_hpa_scales_the_cpu_deployment_on_cpu_which_has_requests() -> None:
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    (deployment,) = [d for d in deployments() if d["metadata"]["name"] == target["name"]]
    assert (target["apiVersion"], target["kind"]) == (deployment["apiVersion"], deployment["kind"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["minReplicas"] >= 2, "at least two replicas for failover"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # Utilization is measured against the request: without one the HPA cannot work.
    assert "cpu" in main_container(deployment["spec"]["template"]["spec"])["resources"]["requests"]


def test_pdb_selects_the_cpu_pool() -> None:
    (pdb,) = of_kind("PodDisruptionBudget")
    (cpu,) = [d for d in deployments() if not d["metadata"]["name"].endswith("-gpu")]
    assert pdb["spec"]["selector"]["matchLabels"] == cpu["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < cpu["spec"]["replicas"]


def test_kserve_triton_serves_the_model_repository_layout_triton_expects() -> None:
    (triton,) = [d for d in of_kind("InferenceService") if "model" in d["spec"]["predictor"]]
    model = triton["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton"
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"].endswith("model_repository")
    # The repository it points at is the bundled one: one model per directory, config name == directory.
    models = [p for p in (REPO / "model_repository").iterdir() if p.is_dir()]
    assert models
    for directory in models:
        config = (directory / CONFIG_FILENAME).read_text()
        assert re.search(rf'^name: "{re.escape(directory.name)}"$', config, re.M), directory
        assert 'platform: "onnxruntime_onnx"' in config
        assert list(directory.glob(f"*/{ONNX_FILENAME}")), directory


def test_kserve_custom_predictor_runs_our_image_on_the_fetched_repository() -> None:
    (custom,) = [d for d in of_kind("InferenceService") if "containers" in d["spec"]["predictor"]]
    (container,) = custom["spec"]["predictor"]["containers"]
    assert container["image"].startswith("fastweights-serve:")
    env = env_of(container)
    assert env["STORAGE_URI"].endswith("model_repository")
    assert env["FWS_MODEL_REPOSITORY"] == "/mnt/models"  # where KServe's storage initializer puts it
    assert container["ports"][0]["containerPort"] == int(env["FWS_PORT"])
    assert container["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == LIVE_PATH


# Against the Kubernetes schemas themselves: kubernetes-validate ships the OpenAPI schemas of every release in
# the package, so this runs offline. strict: a misspelt field is an error, not silently ignored.
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests must work on (autoscaling/v2, policy/v1)


def _schema_checked() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in DOCS if d["kind"] not in ("InferenceService", "Kustomization")]


@pytest.mark.parametrize(
    ("path", "doc"),
    _schema_checked(),
    ids=[f"{p.relative_to(K8S)}:{d['kind']}" for p, d in _schema_checked()],
)
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, "latest"])
def test_every_kubernetes_manifest_validates_against_the_kubernetes_schema(
    path: Path, doc: dict[str, Any], version: str
) -> None:
    import kubernetes_validate

    wanted = kubernetes_validate.latest_version() if version == "latest" else version
    kubernetes_validate.validate(doc, wanted, strict=True)  # raises ValidationError saying where


def test_the_kserve_custom_predictors_container_validates_as_a_kubernetes_container() -> None:
    """InferenceService is KServe's CRD (not in Kubernetes' schemas); its containers are core/v1 ones."""
    import kubernetes_validate

    (predictor,) = [d for d in of_kind("InferenceService") if d["spec"]["predictor"].get("containers")]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kserve-predictor-check"},
        "spec": {"containers": predictor["spec"]["predictor"]["containers"]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_schema_validation_catches_a_wrong_type_and_a_misspelt_field() -> None:
    import copy

    import kubernetes_validate

    (cpu,) = [d for d in deployments() if not d["metadata"]["name"].endswith("-gpu")]
    wrong_type = copy.deepcopy(cpu)
    wrong_type["spec"]["replicas"] = "two"
    misspelt = copy.deepcopy(cpu)
    main_container(misspelt["spec"]["template"]["spec"])["readinesProbe"] = {"periodSeconds": 5}
    for broken in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_gpu_deployment_sets_onnxruntime_threads_to_its_cpu_limit() -> None:
    for deployment in deployments():
        container = main_container(deployment["spec"]["template"]["spec"])
        threads = int(env_of(container)["FWS_ORT_INTRA_OP_THREADS"])
        assert threads == quantity(container["resources"]["limits"]["cpu"]), deployment["metadata"]["name"]


def test_prometheus_can_scrape_metrics_when_the_api_key_is_set() -> None:
    for deployment in deployments():
        template = deployment["spec"]["template"]
        env = env_of(main_container(template["spec"]))
        assert "FWS_API_KEY" in env  # auth can be on ...
        assert env["FWS_METRICS_PUBLIC"] == "true"  # ... and the scrape still needs no key
        assert template["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_the_apply_commands_in_the_manifests_comments_are_the_ones_the_docs_give() -> None:
    docs = (REPO / "docs" / "deployment.md").read_text()
    commands = set()
    for path in K8S.rglob("*.yaml"):
        commands |= set(re.findall(r"kubectl apply [^\s(]+ [^\s(]+", path.read_text()))
    assert commands, "no apply command in the manifests' comments"
    for command in commands:
        assert command.startswith("kubectl apply -k "), command
        assert command in docs, command


def test_every_replica_keeps_memory_sessions_in_the_redis_the_manifests_run() -> None:
    (redis,) = of_kind("StatefulSet")
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "fastweights-redis"]
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "--save" in container["args"]
    for deployment in deployments():
        env = env_of(main_container(deployment["spec"]["template"]["spec"]))
        assert env["FWS_SESSION_STORE"] == f"redis://{service['metadata']['name']}:{port['port']}/0"
