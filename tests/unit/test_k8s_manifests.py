"""deploy/k8s, validated offline: ``kubectl kustomize`` builds it, every built-in object
passes ``kubernetes-validate`` (strict: no unknown fields) against the Kubernetes
schemas, and the parts that make stream affinity and autoscaling work are present and
point at each other. No cluster is reachable here: nothing is applied.

kubernetes-validate ships the Kubernetes API's schemas only; the ServiceMonitor
(prometheus-operator's CRD) has none there, so it is checked explicitly below instead.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.tools("kubectl")  # every test reads what `kubectl kustomize` renders
K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found (Debian's kubectl package; it renders kustomize)")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} in deploy/k8s"
    return found


def test_every_builtin_object_passes_the_kubernetes_schema(objects):
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked == len(objects) - sum((o["apiVersion"], o["kind"]) in CRDS for o in objects)
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "Ingress",
                                            "HorizontalPodAutoscaler", "ConfigMap", "ServiceMonitor"}


def test_the_validator_refuses_a_broken_object(objects):
    """The schema check can fail: a misspelt field of the Deployment is refused."""
    import kubernetes_validate

    deployment = yaml.safe_load(yaml.safe_dump(find(objects, "Deployment", "triton")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_ingresses_hash_the_correlation_id(objects):
    ingresses = find(objects, "Ingress")
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_correlation_id"
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    grpc = find(objects, "Ingress", "triton-grpc")[0]
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    service = find(objects, "Service", "triton")[0]
    ports = {p["name"] for p in service["spec"]["ports"]}
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "triton"
                assert path["backend"]["service"]["port"]["name"] in ports


def test_probes_on_tritons_health_endpoints(objects):
    pod = find(objects, "Deployment", "triton")[0]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/models" in mounts and "/dev/shm" in mounts
    init = pod["spec"]["initContainers"][0]
    assert any(m["mountPath"] == "/models" for m in init["volumeMounts"])


def test_service_monitor_scrapes_the_metrics_port(objects):
    """The CRD object, checked by hand: prometheus-operator's required fields, a selector
    that matches the Service, an endpoint on the Service's metrics port."""
    monitor = find(objects, "ServiceMonitor", "triton")[0]
    service = find(objects, "Service", "triton")[0]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert ports[endpoint["port"]] == 8002 and endpoint["path"] == "/metrics"


def test_autoscaling_on_queue_time(objects):
    hpa = find(objects, "HorizontalPodAutoscaler", "triton")[0]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "avg_time_queue_us"
    rules = yaml.safe_load(find(objects, "ConfigMap", "prometheus-adapter-triton-rules")[0]["data"]["config.yaml"])
    (rule,) = rules["rules"]
    assert rule["name"]["as"] == "avg_time_queue_us"
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert f'namespace="{hpa["metadata"]["namespace"]}"' in rule["seriesQuery"]
