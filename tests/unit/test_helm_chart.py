"""The Helm chart, rendered by the real Helm engine (helm-python-sdk, no cluster): it lints
clean, every manifest validates against the Kubernetes schemas, the values users depend on
land where they should, and bad values fail at install with the path of the mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from streaming.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "streaming-workers"
KUBE_VERSION = "1.31.0"
"""A recent Kubernetes the schemas of kubernetes-validate cover."""
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
"""Custom resources: not in the Kubernetes schemas; their key fields are checked by hand."""

VALUES_FILES = {
    "default": None,
    "cpu": CHART / "examples" / "values-cpu.yaml",
    "gpu": CHART / "examples" / "values-gpu.yaml",
    "keda": CHART / "examples" / "values-keda.yaml",
}


@pytest.fixture(scope="module")
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def values(name: str) -> dict[str, Any]:
    path = VALUES_FILES[name]
    return yaml.safe_load(path.read_text()) if path else {}


def render(chart: helm.Chart, vals: dict[str, Any]) -> list[dict[str, Any]]:
    chart.validate_schema(vals)
    out = chart.render(vals, name="fraud", namespace="fraud", is_install=True)
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def kind(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == name]


def worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_chart_lints_clean() -> None:
    for name in VALUES_FILES:
        report = helm.lint(str(CHART), values(name), strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, (name, report)


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_every_manifest_validates_against_kubernetes(chart: helm.Chart, name: str) -> None:
    docs = render(chart, values(name))
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    kinds = sorted(d["kind"] for d in docs)
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= set(kinds), kinds


def test_expected_kinds_per_values_file(chart: helm.Chart) -> None:
    kinds = {n: sorted({d["kind"] for d in render(chart, values(n))}) for n in VALUES_FILES}
    assert "ServiceMonitor" in kinds["cpu"] and "PrometheusRule" in kinds["cpu"]
    assert "ScaledObject" in kinds["keda"] and "HorizontalPodAutoscaler" not in kinds["keda"]
    assert not CRD_KINDS & set(kinds["default"])  # no CRDs unless asked for


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_rendered_pipeline_config_loads_in_the_worker(
    chart: helm.Chart, name: str, tmp_path: Path
) -> None:
    docs = render(chart, values(name))
    (cm,) = [d for d in kind(docs, "ConfigMap") if "pipeline.yaml" in d["data"]]
    path = tmp_path / "pipeline.yaml"
    path.write_text(cm["data"]["pipeline.yaml"])
    cfg = load_config(path)
    mounts = {m["mountPath"] for m in worker(docs)["volumeMounts"]}
    assert cfg.models_dir == "/app/models" or cfg.models_dir in mounts


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_probes_grace_and_hardening(chart: helm.Chart, name: str) -> None:
    docs = render(chart, values(name))
    c = worker(docs)
    pod = kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    drain = values(name).get("pipeline", {}).get("worker", {}).get("drain_timeout_s", 20)
    assert pod["terminationGracePeriodSeconds"] > drain
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = c["ports"]
    assert c["livenessProbe"]["httpGet"]["port"] == port["name"] == "metrics"
    assert str(port["containerPort"]) in c["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_gpu_values_request_gpus_on_gpu_nodes(chart: helm.Chart) -> None:
    docs = render(chart, values("gpu"))
    c = worker(docs)
    pod = kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    (init,) = pod["initContainers"]  # models from object storage
    assert "s3://fraud-models/" in init["args"]
    assert "nvidia.com/gpu" not in worker(render(chart, {}))["resources"].get("limits", {})


def test_credentials_come_from_a_secret_volume_never_plain_values(chart: helm.Chart) -> None:
    docs = render(chart, values("cpu"))
    pod = kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    c = worker(docs)
    env = {e["name"]: e for e in c["env"]}
    assert env["STREAMING_KAFKA_SECRETS_DIR"]["value"] == "/etc/streaming/kafka-secrets"
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secret_volumes == {
        "kafka-secrets": "fraud-kafka-credentials",
        "kafka-tls": "fraud-kafka-ca",
    }
    rendered = yaml.safe_dump_all(docs)
    assert "sasl.password" not in rendered


def test_keda_never_scales_above_the_partitions(chart: helm.Chart) -> None:
    docs = render(chart, values("keda"))
    (scaled,) = kind(docs, "ScaledObject")
    partitions = values("keda")["pipeline"]["topics"]["partitions"]
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "fraud-scorer"
    assert trigger["metadata"]["topic"] == "fraud.transactions"
    assert "replicas" not in kind(docs, "Deployment")[0]["spec"]  # the autoscaler owns it


def test_prometheus_rule_and_dashboard_carry_the_checked_files(chart: helm.Chart) -> None:
    docs = render(chart, values("cpu"))
    (rule,) = kind(docs, "PrometheusRule")
    on_disk = yaml.safe_load((CHART / "files" / "alerts.rules.yml").read_text())
    assert rule["spec"] == on_disk
    dash = [d for d in kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")]
    assert dash and "streaming_end_to_end_seconds" in dash[0]["data"]["streaming-workers.json"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"replicaCount": "3"}, "/replicaCount"),
        ({"metrics": {"port": -1}}, "/metrics/port"),
        ({"modles": {}}, "'modles' not allowed"),
        ({"models": {"source": "ftp"}}, "/models/source"),
        ({"kafka": {"bootstrap": "no-port"}}, "/kafka/bootstrap"),
        ({"gpu": {"enabled": "yes"}}, "/gpu/enabled"),
        ({"pipeline": {"topics": {"partitions": 0}}}, "/pipeline/topics/partitions"),
        ({"pipeline": {"models_dir": "/x"}}, "/pipeline/models_dir"),
    ],
)
def test_bad_values_fail_at_install_with_the_path(
    chart: helm.Chart, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        chart.validate_schema(bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"autoscaling": {"keda": {"enabled": True, "maxReplicaCount": 40}}},
            r"maxReplicaCount \(40\) is above pipeline.topics.partitions \(12\)",
        ),
        (
            {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
            "either hpa or keda",
        ),
        ({"models": {"source": "volume"}}, "models.volume.claimName"),
        ({"replicaCount": 13}, r"replicaCount \(13\) is above"),
    ],
)
def test_inconsistent_values_fail_at_render(
    chart: helm.Chart, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, bad)
