"""The Kubernetes manifests (deploy/k8s) agree with Kubernetes and with qembed.

Offline, no cluster: every manifest is validated against the Kubernetes OpenAPI schemas that
the ``kubernetes-validate`` package bundles (strict: an unknown or misspelt field fails), for
the oldest and the newest Kubernetes version checked here. KEDA's ScaledObject is a CRD, which
that package has no schema for: it is validated against the subset of KEDA's CRD schema
written below (the fields the manifest uses, unknown fields refused). Against qembed: the
drain arithmetic (the kubelet's SIGKILL comes after preStop + ``--shutdown-timeout``), the
probe paths are routes of the app, every QEMBED_* variable is a Settings field, the metric the
autoscalers read is one the server exports, and the cache volume is where the caches are.
With ``kubectl`` on PATH, the kustomization is rendered (``kubectl kustomize``) and the
rendered objects are validated too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qembed.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
VERSIONS = ("1.29.0", "1.37.0")  # the oldest release still common on managed clusters, the newest bundled
# A container may run longer than preStop + shutdown-timeout: the batch running at the deadline
# ends (serving/service.stop), then the process exits; this much is left for that.
EXIT_MARGIN_S = 10
# QEMBED_* variables that are not Settings fields, and who reads them.
NOT_SETTINGS = {"QEMBED_CACHE_HOME"}  # qembed.common.paths.ENV (read before settings exist)

yaml = pytest.importorskip("yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind in deploy/k8s (each file holds one)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in documents(path):
            if "kind" in doc:
                assert doc["kind"] not in out, f"two {doc['kind']} objects"
                out[doc["kind"]] = doc
    return out


def container() -> dict[str, Any]:
    (c,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"]}


def test_the_folder_holds_the_expected_objects() -> None:
    kinds = set(manifests())
    assert {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler"} <= kinds
    assert {"ScaledObject", "PodDisruptionBudget", "Kustomization"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    checked = []
    for kind, doc in manifests().items():
        if kind in ("ScaledObject", "Kustomization"):  # a CRD, and kustomize's own file: below
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{kind}: {exc}")
        checked.append(kind)
    assert len(checked) >= 5


def test_the_validator_refuses_a_misspelt_field() -> None:
    """The check above can fail: strict mode refuses a field Kubernetes does not have."""
    kv = pytest.importorskip("kubernetes_validate")
    doc = manifests()["Deployment"]
    broken = {**doc, "spec": {**doc["spec"], "replica": 2}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, VERSIONS[-1], strict=True)


# The part of KEDA's ScaledObject CRD (keda.sh/v1alpha1, KEDA 2.10+) the manifest uses.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
KEDA_SCALEDOBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": _STRINGS,  # KEDA reads every trigger parameter as a string
                        },
                    },
                },
            },
        },
    },
}


def test_keda_scaledobject_matches_the_crd_subset_and_the_prometheus_scaler() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    so = manifests()["ScaledObject"]
    jsonschema.validate(so, KEDA_SCALEDOBJECT)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
    float(trigger["metadata"]["threshold"])
    with pytest.raises(jsonschema.ValidationError):  # the subset refuses what KEDA would not know
        jsonschema.validate({**so, "spec": {**so["spec"], "minReplicas": 2}}, KEDA_SCALEDOBJECT)


def test_kustomization_lists_the_manifests_and_one_autoscaler() -> None:
    kustomization = manifests()["Kustomization"]
    listed = kustomization["resources"]
    assert all((K8S / name).is_file() for name in listed)
    kinds = {documents(K8S / name)[0]["kind"] for name in listed}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= kinds
    assert len(kinds & {"HorizontalPodAutoscaler", "ScaledObject"}) == 1  # KEDA makes its own HPA
    (image,) = kustomization["images"]
    assert image["name"] == container()["image"].split(":")[0]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_kustomize_renders_objects_that_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    assert {d["kind"] for d in rendered} >= {"Deployment", "Service", "PersistentVolumeClaim"}
    for doc in rendered:
        kv.validate(doc, VERSIONS[-1], strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qembed"


# -- against qembed ---------------------------------------------------------------------------------
def _shutdown_timeout() -> float:
    value = env().get("QEMBED_SHUTDOWN_TIMEOUT")
    return float(value) if value is not None else float(Settings.model_fields["shutdown_timeout"].default)


def _prestop_seconds() -> float:
    hook = container()["lifecycle"]["preStop"]
    if "sleep" in hook:  # the PodLifecycleSleepAction form
        return float(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def test_the_grace_period_covers_prestop_and_the_drain() -> None:
    """SIGKILL must come after preStop + --shutdown-timeout (+ the last batch), or accepted
    requests are cut off."""
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= _prestop_seconds() + _shutdown_timeout() + EXIT_MARGIN_S, (
        grace,
        _prestop_seconds(),
        _shutdown_timeout(),
    )
    assert _prestop_seconds() >= 5  # long enough for endpoint removal to reach kube-proxy


def test_probes_use_real_routes_on_the_served_port() -> None:
    from qembed.server.routes.meta import open_router

    routes = {r.path for r in open_router.routes}  # the app's open routes, no model loaded
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" in routes
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" in routes
    assert c["startupProbe"]["httpGet"]["path"] in routes
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == int(env()["QEMBED_PORT"])
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a first start downloads the model
    # the readiness probe notices SIGTERM's 503 well within the preStop sleep + drain
    ready = c["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= _shutdown_timeout()
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" in routes
    assert int(annotations["prometheus.io/port"]) == int(env()["QEMBED_PORT"])


def test_env_vars_are_settings_fields_with_valid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [n for n in env() if n.startswith("QEMBED_")]
    fields = {f"QEMBED_{name.upper()}" for name in Settings.model_fields}
    unknown = [n for n in names if n not in fields | NOT_SETTINGS]
    assert not unknown, f"not qembed settings: {unknown}"
    for name in names:
        monkeypatch.setenv(name, env()[name])
    settings = Settings()  # the values validate as the server would read them
    assert settings.port == int(env()["QEMBED_PORT"])
    assert settings.threads is not None
    limit = container()["resources"]["limits"]["cpu"]
    assert settings.threads <= float(limit)  # more torch threads than CPUs: the pod throttles
    # The Service is named qembed: service links would inject QEMBED_PORT=tcp://... into the pod.
    assert manifests()["Deployment"]["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_cache_volume_is_where_the_caches_are() -> None:
    c = container()
    (mount,) = c["volumeMounts"]
    for name in ("HF_HOME", "QEMBED_CACHE_HOME", "QEMBED_DATA_DIR"):
        assert env()[name].startswith(mount["mountPath"].rstrip("/") + "/"), name
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == manifests()["PersistentVolumeClaim"]["metadata"]["name"]
    )
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid = re.search(r"^USER (\d+)", dockerfile, re.M)
    assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert 'ENTRYPOINT ["qembed", "serve"' in dockerfile and "command" not in c  # the image runs qembed serve


def test_service_and_budget_select_the_pods() -> None:
    m = manifests()
    labels = m["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        m["Service"]["spec"]["selector"],
        m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    (port,) = m["Service"]["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container()["ports"]}


def exported_metrics() -> set[str]:
    from qembed.server.metrics import Metrics

    return {family.name for family in Metrics().registry.collect()}


def test_the_autoscalers_read_a_metric_the_server_exports() -> None:
    m = manifests()
    exported = exported_metrics()
    assert "qembed_queue_tokens" in exported
    deployment = m["Deployment"]["metadata"]["name"]
    hpa = m["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "qembed_queue_tokens"
    so = m["ScaledObject"]["spec"]
    assert so["scaleTargetRef"]["name"] == deployment
    query = so["triggers"][0]["metadata"]["query"]
    used = set(re.findall(r"\bqembed_\w+", query))
    assert used == {"qembed_queue_tokens"} and used <= exported
    # the Prometheus adapter rule serves that series under that name
    (rule,) = documents(K8S / "prometheus-adapter-values.yaml")[0]["rules"]["custom"]
    assert (
        rule["seriesQuery"].split("{")[0] == "qembed_queue_tokens"
        and rule["name"]["as"] == "qembed_queue_tokens"
    )
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # targets agree: per pod, the same number of tokens waiting
    assert float(metric["pods"]["target"]["averageValue"]) == float(
        so["triggers"][0]["metadata"]["threshold"]
    )
    assert hpa["minReplicas"] == so["minReplicaCount"] and hpa["maxReplicas"] == so["maxReplicaCount"]
    assert m["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]  # a drain can proceed
