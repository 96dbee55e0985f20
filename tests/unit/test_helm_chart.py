"""The Helm chart, rendered by the real Helm engine (helm-python-sdk: Helm's Go SDK in a shared
library, offline, no cluster): it lints clean, every manifest validates against the Kubernetes
schemas, the values users depend on land where they should, and bad values fail at install
with the path of the mistake."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from streaming.commit.committer import Transactional
from streaming.config import PipelineConfig, load_config
from streaming.kafka.secrets import ENV_SECRETS_DIR, SECRET_KEYS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "streaming-workers"
KUBE_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes still commonly run that the chart targets, and the newest the
installed kubernetes-validate has schemas for."""
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
"""Custom resources: not in the Kubernetes schemas; their key fields are checked by hand."""
CONFIG_PATH = "/etc/streaming/pipeline.yaml"

VALUES_FILES: dict[str, Path | dict[str, Any]] = {
    "default": {},
    "cpu": CHART / "examples" / "values-cpu.yaml",
    "gpu": CHART / "examples" / "values-gpu.yaml",
    "keda": CHART / "examples" / "values-keda.yaml",
    "hpa": {"autoscaling": {"hpa": {"enabled": True}}},
    "exactly-once": {
        "pipeline": {"delivery": "exactly-once"},
        "worker": {"processes": 2},
        "autoscaling": {"hpa": {"enabled": True, "maxReplicas": 6}},
    },
}
"""The three examples, the defaults, an HPA (no example file) so that it is validated too, and
exactly-once (a StatefulSet under an HPA, a pool of two per pod)."""

BASE_KINDS = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
EXPECTED_KINDS = {
    "default": BASE_KINDS,
    "cpu": sorted([*BASE_KINDS, "ConfigMap", "PrometheusRule", "ServiceMonitor"]),
    "gpu": BASE_KINDS,
    "keda": sorted([*BASE_KINDS, "ScaledObject", "ServiceMonitor"]),
    "hpa": sorted([*BASE_KINDS, "HorizontalPodAutoscaler"]),
    "exactly-once": sorted(
        [*(k for k in BASE_KINDS if k != "Deployment"), "HorizontalPodAutoscaler", "StatefulSet"]
    ),
}


@functools.cache
def chart() -> helm.Chart:
    """Loaded once: the chart does not change during a run."""
    return helm.Chart.load(str(CHART))


def values(name: str) -> dict[str, Any]:
    """A fresh copy of a named values set (tests may modify it)."""
    source = VALUES_FILES[name]
    if isinstance(source, Path):
        return yaml.safe_load(source.read_text())
    return copy.deepcopy(source)


def render(vals: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifests an install would apply (schema checked first, as `helm install` does)."""
    chart().validate_schema(vals)
    out = chart().render(vals, name="fraud", namespace="fraud", is_install=True)
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@functools.cache
def _rendered(name: str) -> str:
    return yaml.safe_dump_all(render(values(name)))


def rendered(name: str) -> list[dict[str, Any]]:
    """The manifests of a named values set, rendered once per run (a fresh copy each call)."""
    return list(yaml.safe_load_all(_rendered(name)))


def merged(name: str) -> dict[str, Any]:
    """The chart's defaults coalesced with a values set: what the templates saw."""
    return chart().merge_values(values(name))


def kind(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == name]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' Deployment or StatefulSet (exactly one of them)."""
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return found


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return workload(docs)["spec"]["template"]["spec"]


def worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(docs)["containers"]
    return container


def pipeline_yaml(docs: list[dict[str, Any]]) -> str:
    (cm,) = [d for d in kind(docs, "ConfigMap") if "pipeline.yaml" in d.get("data", {})]
    return cm["data"]["pipeline.yaml"]


def on_device(device: str) -> dict[str, Any]:
    """Values with the one model version on ``device``."""
    return {
        "pipeline": {"model": {"name": "fraud", "versions": [{"version": "v2", "device": device}]}}
    }


# ---------------------------------------------------------------- lint, kinds, Kubernetes schemas


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_chart_lints_clean(name: str) -> None:
    report = helm.lint(str(CHART), values(name), strict=True, kube_version=f"v{KUBE_VERSIONS[0]}")
    warnings = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not warnings, report


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_rendered_kinds(name: str) -> None:
    assert sorted(d["kind"] for d in rendered(name)) == EXPECTED_KINDS[name]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_every_manifest_validates_against_kubernetes(name: str, version: str) -> None:
    for doc in rendered(name):
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_custom_resources_carry_their_key_fields() -> None:
    """Not in the Kubernetes schemas: the fields their operators act on, checked by hand."""
    cpu, keda = rendered("cpu"), rendered("keda")
    (service,) = kind(cpu, "Service")
    for docs in (cpu, keda):
        (monitor,) = kind(docs, "ServiceMonitor")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
        assert endpoint["path"] == "/metrics"

    (rule,) = kind(cpu, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"]["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"]

    (scaled,) = kind(keda, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert (
        scaled["spec"]["scaleTargetRef"]["name"] == kind(keda, "Deployment")[0]["metadata"]["name"]
    )


def test_prometheus_rule_and_dashboard_carry_the_checked_files() -> None:
    docs = rendered("cpu")
    (rule,) = kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.rules.yml").read_text())
    (dash,) = [
        d for d in kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dash["data"].values()
    assert text == (CHART / "files" / "dashboard.json").read_text().rstrip("\n")


# ---------------------------------------------------------------- what the worker gets


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_rendered_pipeline_config_loads_in_the_worker(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own loader, with the pod's environment (secrets directory included)."""
    docs = rendered(name)
    container = worker(docs)
    env = {e["name"]: e.get("value") for e in container["env"]}
    monkeypatch.setenv("STREAMING_BOOTSTRAP", env["STREAMING_BOOTSTRAP"])
    monkeypatch.delenv(ENV_SECRETS_DIR, raising=False)
    if ENV_SECRETS_DIR in env:
        secrets = tmp_path / "kafka-secrets"  # what the mounted Secret looks like
        secrets.mkdir()
        (secrets / "sasl.username").write_text("fraud")
        (secrets / "sasl.password").write_text("not-a-real-one")
        monkeypatch.setenv(ENV_SECRETS_DIR, str(secrets))
    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline_yaml(docs))

    cfg = load_config(path)

    assert cfg.kafka.bootstrap == merged(name)["kafka"]["bootstrap"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    source = merged(name)["models"]["source"]
    assert cfg.models_dir == ("/app/models" if source == "image" else "/models")
    assert source == "image" or cfg.models_dir in mounts
    assert pod_spec(docs)["terminationGracePeriodSeconds"] > cfg.worker.drain_timeout_s


def test_default_pipeline_is_the_fraud_pipeline() -> None:
    """The chart's default config is pipelines/fraud/pipeline.yaml but for deliberate changes
    for a real Kafka: a drift between them fails here."""
    deliberate = {
        "models_dir",  # set by the chart
        "kafka.bootstrap",  # from kafka.bootstrap
        "kafka.consumer.fetch.wait.max.ms",  # embedded-broker tuning
        "kafka.consumer.session.timeout.ms",  # 6 s for fast test joins; 10 s in production
        "topics.partitions",  # 12: room to scale out
        "worker.metrics_port",  # from metrics.port
    }

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict):
            return {prefix: node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}.{key}" if prefix else key))
        return out

    repo = flat(yaml.safe_load((ROOT / "pipelines" / "fraud" / "pipeline.yaml").read_text()))
    chart_default = flat(chart().values["pipeline"])
    differ = {
        k
        for k in repo.keys() | chart_default.keys()
        if repo.get(k, "absent") != chart_default.get(k, "absent")
    }
    assert differ <= deliberate, sorted(differ - deliberate)


def test_worker_command_env_and_metrics_port() -> None:
    docs = render({"metrics": {"port": 9200}})
    c = worker(docs)
    assert [*c["command"], *c["args"]] == [
        "streaming", "run", "-c", CONFIG_PATH, "--metrics-port", "9200"
    ]  # fmt: skip
    (port,) = c["ports"]
    assert port == {"name": "metrics", "containerPort": 9200, "protocol": "TCP"}
    (service,) = kind(docs, "Service")
    assert service["spec"]["ports"][0]["port"] == 9200
    assert service["spec"]["publishNotReadyAddresses"] is True  # scrape unready workers too
    env = {e["name"]: e for e in c["env"]}
    assert env["STREAMING_BOOTSTRAP"]["value"] == "kafka:9092"
    assert env["STREAMING_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert ENV_SECRETS_DIR not in env  # no credentials secret configured
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == CONFIG_PATH)
    assert mount["readOnly"] is True


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_probes_grace_and_hardening(name: str) -> None:
    docs = rendered(name)
    c = worker(docs)
    pod = pod_spec(docs)
    drain = merged(name)["pipeline"]["worker"]["drain_timeout_s"]
    assert pod["terminationGracePeriodSeconds"] > drain

    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert c["ports"][0]["name"] == "metrics"
    # Warm-up (importing torch, loading and warming models) gets minutes, not seconds.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert c["livenessProbe"]["failureThreshold"] >= 3

    pod_sc, sc = pod["securityContext"], c["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    for init in pod.get("initContainers", []):
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("drain", [5, 12.5, 20, 90])
def test_grace_is_longer_than_any_drain_deadline(drain: float) -> None:
    vals = {"pipeline": {"worker": {"drain_timeout_s": drain}}}
    grace = pod_spec(render(vals))["terminationGracePeriodSeconds"]
    assert grace == math.ceil(drain) + chart().values["terminationGraceMarginSeconds"]
    assert grace > drain


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(vals: dict[str, Any]) -> str:
        (deployment,) = kind(render(vals), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/pipeline"]

    same = checksum({})
    assert checksum({}) == same
    assert checksum({"pipeline": {"model": {"threshold": 0.7}}}) != same


def test_disruption_budget_covers_the_workers() -> None:
    docs = rendered("default")
    (pdb,) = kind(docs, "PodDisruptionBudget")
    labels = kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert {"app.kubernetes.io/name", "app.kubernetes.io/instance"} <= labels.keys()


# ---------------------------------------------------------------- GPU, models, credentials


def test_gpu_values_request_gpus_on_gpu_nodes() -> None:
    docs = rendered("gpu")
    c, pod = worker(docs), pod_spec(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    cfg = yaml.safe_load(pipeline_yaml(docs))
    assert all(v["device"] == "cuda" and v["runtime"] == "torch" for v in cfg["model"]["versions"])
    assert "nvidia.com/gpu" not in worker(rendered("default"))["resources"].get("limits", {})


def test_models_from_image_volume_or_object_storage() -> None:
    image, volume, objects = rendered("cpu"), rendered("keda"), rendered("gpu")

    assert "/models" not in {m["mountPath"] for m in worker(image)["volumeMounts"]}
    assert yaml.safe_load(pipeline_yaml(image))["models_dir"] == "/app/models"

    (pvc,) = [v for v in pod_spec(volume)["volumes"] if v["name"] == "models"]
    assert pvc["persistentVolumeClaim"] == {"claimName": "fraud-models", "readOnly": True}
    (mount,) = [m for m in worker(volume)["volumeMounts"] if m["name"] == "models"]
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}

    pod = pod_spec(objects)
    (scratch,) = [v for v in pod["volumes"] if v["name"] == "models"]
    assert "emptyDir" in scratch
    (init,) = pod["initContainers"]
    assert init["image"] == merged("gpu")["models"]["objectStorage"]["image"]
    assert init["command"][:3] == ["aws", "s3", "sync"]
    assert init["args"][:2] == ["s3://fraud-models/", "/models"]
    assert init["envFrom"] == [{"secretRef": {"name": "fraud-models-s3"}}]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]


def test_credentials_come_from_a_secret_volume_never_plain_values() -> None:
    docs = rendered("cpu")
    pod, c = pod_spec(docs), worker(docs)
    env = {e["name"]: e for e in c["env"]}
    assert env[ENV_SECRETS_DIR]["value"] == "/etc/streaming/kafka-secrets"
    assert not any("valueFrom" in e and "secretKeyRef" in e["valueFrom"] for e in c["env"])
    assert "envFrom" not in c
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secret_volumes == {
        "kafka-secrets": "fraud-kafka-credentials",
        "kafka-tls": "fraud-kafka-ca",
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["kafka-secrets"]["mountPath"] == "/etc/streaming/kafka-secrets"
    assert mounts["kafka-tls"]["mountPath"] == "/etc/streaming/kafka-tls"
    assert mounts["kafka-secrets"]["readOnly"] and mounts["kafka-tls"]["readOnly"]
    cfg = yaml.safe_load(pipeline_yaml(docs))
    assert cfg["kafka"]["common"]["ssl.ca.location"].startswith("/etc/streaming/kafka-tls/")
    assert not any(key in _rendered("cpu") for key in SECRET_KEYS)


# ---------------------------------------------------------------- autoscaling


def test_keda_never_scales_above_the_partitions() -> None:
    docs = rendered("keda")
    (scaled,) = kind(docs, "ScaledObject")
    pipeline = merged("keda")["pipeline"]
    assert scaled["spec"]["maxReplicaCount"] <= pipeline["topics"]["partitions"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == "kafka:9092"
    assert meta["consumerGroup"] == pipeline["kafka"]["group"] == "fraud-scorer"
    assert meta["topic"] == pipeline["topics"]["input"] == "fraud.transactions"
    assert int(meta["lagThreshold"]) > 0
    assert not kind(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in kind(docs, "Deployment")[0]["spec"]  # the autoscaler owns it


def test_hpa_scales_on_cpu_within_the_partitions() -> None:
    docs = rendered("hpa")
    (hpa,) = kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["maxReplicas"] <= merged("hpa")["pipeline"]["topics"]["partitions"]
    assert not kind(docs, "ScaledObject")
    assert "replicas" not in kind(docs, "Deployment")[0]["spec"]


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"replicaCount": "3"}, "at '/replicaCount': got string, want integer"),
        ({"metrics": {"port": -1}}, "at '/metrics/port': minimum"),
        ({"modles": {}}, "additional properties 'modles' not allowed"),
        ({"models": {"source": "ftp"}}, "at '/models/source': value must be one of"),
        ({"models": {"volume": {"claim": "x"}}}, "additional properties 'claim' not allowed"),
        ({"kafka": {"bootstrap": "no-port"}}, "at '/kafka/bootstrap'"),
        ({"kafka": {"password": "x"}}, "additional properties 'password' not allowed"),
        ({"gpu": {"enabled": "yes"}}, "at '/gpu/enabled': got string, want boolean"),
        ({"securityContext": {"runAsUser": 0}}, "at '/securityContext/runAsUser': minimum"),
        ({"autoscaling": {"keda": {"maxReplicas": 4}}}, "'maxReplicas' not allowed"),
        ({"pipeline": {"pipline": {}}}, "at '/pipeline': additional properties 'pipline'"),
        ({"pipeline": {"topics": {"partitions": 0}}}, "at '/pipeline/topics/partitions'"),
        ({"pipeline": {"delivery": "exactly_once"}}, "at '/pipeline/delivery'"),
        ({"worker": {"kind": "statefulset"}}, "at '/worker/kind': value must be one of"),
        ({"pipeline": {"worker": {"drain_timeout_s": "20"}}}, "drain_timeout_s': got string"),
        ({"pipeline": {"worker": {"inference_timeout_s": 0}}}, "inference_timeout_s'"),
        (
            on_device("gpu"),
            "at '/pipeline/model/versions/0/device'",
        ),
    ],
)
def test_bad_values_fail_at_install_with_the_path(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        chart().render(bad, name="fraud", namespace="fraud", is_install=True)


def test_schema_knows_every_pipeline_key() -> None:
    """A typo'd top-level pipeline key fails at install, and no real key is refused."""
    schema = chart().schema
    assert schema is not None
    assert set(schema["properties"]["pipeline"]["properties"]) == set(PipelineConfig.model_fields)
    assert schema["properties"]["pipeline"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"autoscaling": {"keda": {"enabled": True, "maxReplicaCount": 40}}},
            r"autoscaling.keda.maxReplicaCount \(40\) is above pipeline.topics.partitions \(12\)",
        ),
        (
            {"autoscaling": {"hpa": {"enabled": True, "maxReplicas": 13}}},
            r"autoscaling.hpa.maxReplicas \(13\) is above pipeline.topics.partitions \(12\)",
        ),
        (
            {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
            "enable either hpa or keda, not both",
        ),
        (
            {
                "autoscaling": {
                    "keda": {"enabled": True, "minReplicaCount": 8, "maxReplicaCount": 6}
                }
            },
            r"minReplicaCount \(8\) is above autoscaling.keda.maxReplicaCount \(6\)",
        ),
        ({"replicaCount": 13}, r"replicaCount \(13\) is above pipeline.topics.partitions \(12\)"),
        ({"models": {"source": "volume"}}, "set models.volume.claimName"),
        ({"models": {"source": "objectStorage"}}, "set models.objectStorage.uri"),
        (
            on_device("cuda"),
            "version v2 runs on device cuda but gpu.enabled is false",
        ),
        ({"pipeline": {"models_dir": "/x"}}, "pipeline.models_dir is set by the chart"),
        (
            {"pipeline": {"kafka": {"group": "g", "secrets_dir": "/x"}}},
            "pipeline.kafka.secrets_dir is set by the chart",
        ),
        *[
            (
                {"pipeline": {"kafka": {"group": "g", section: {key: "hunter2"}}}},
                rf"pipeline.kafka.{section}.{key}: a password never goes in values",
            )
            for key in sorted(SECRET_KEYS)
            for section in ("common", "producer")
        ],
    ],
)
def test_inconsistent_values_fail_at_render(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(bad)


def test_replica_count_is_ignored_under_an_autoscaler() -> None:
    """replicaCount only sizes a fixed fleet; under an autoscaler it is not checked or used."""
    docs = render({"replicaCount": 40, "autoscaling": {"hpa": {"enabled": True}}})
    assert "replicas" not in kind(docs, "Deployment")[0]["spec"]


# ---------------------------------------------------------------- worker pools


def test_a_pool_of_processes_gets_its_flag_and_cpu_to_match() -> None:
    docs = render({"replicaCount": 3, "worker": {"processes": 4, "cpuPerProcess": 0.5}})
    c = worker(docs)
    assert c["args"][-2:] == ["--processes", "4"]
    assert c["resources"]["requests"]["cpu"] == "2000m"  # 4 processes x 0.5 core
    assert "--processes" not in worker(render({}))["args"]  # one process: today's command


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"replicaCount": 4, "worker": {"processes": 4}},
            r"replicaCount \(4\) x worker.processes \(4\) = 16 consumers is above "
            r"pipeline.topics.partitions \(12\)",
        ),
        (
            {
                "worker": {"processes": 2},
                "autoscaling": {"hpa": {"enabled": True, "maxReplicas": 7}},
            },
            r"autoscaling.hpa.maxReplicas \(7\) x worker.processes \(2\) = 14",
        ),
        (
            {
                "worker": {"processes": 3},
                "autoscaling": {"keda": {"enabled": True, "maxReplicaCount": 5}},
            },
            r"autoscaling.keda.maxReplicaCount \(5\) x worker.processes \(3\) = 15",
        ),
    ],
)
def test_replicas_times_processes_never_above_the_partitions(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_a_tracing_endpoint_turns_tracing_on_and_reaches_the_exporter(tmp_path: Path) -> None:
    off = render({})
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in {e["name"] for e in worker(off)["env"]}
    assert "tracing" not in yaml.safe_load(pipeline_yaml(off))

    url = "http://otel-collector.observability:4317"
    docs = render({"tracing": {"endpoint": url, "protocol": "grpc"}})
    env = {e["name"]: e.get("value") for e in worker(docs)["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == url
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline_yaml(docs))
    assert load_config(path).tracing.enabled is True


# ---------------------------------------------------------------- stable ids for exactly-once


@pytest.mark.parametrize(
    ("vals", "expected"),
    [
        ({}, "Deployment"),
        ({"pipeline": {"delivery": "exactly-once"}}, "StatefulSet"),
        ({"worker": {"kind": "StatefulSet"}}, "StatefulSet"),
        (
            {"worker": {"kind": "Deployment"}, "pipeline": {"delivery": "exactly-once"}},
            "Deployment",
        ),
    ],
)
def test_exactly_once_runs_as_a_statefulset_unless_told(
    vals: dict[str, Any], expected: str
) -> None:
    assert workload(render(vals))["kind"] == expected


def test_a_replaced_pod_keeps_its_transactional_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A StatefulSet's pods are <name>-<ordinal>, and a pod's replacement has its name; the
    worker id is the pod name (a pool's slots add -<n>), so the transactional ids of the
    replacement are those of the pod it replaces, and its start fences their open
    transactions. The timeout the rendered config gives outlasts a healthy transaction."""
    docs = rendered("exactly-once")
    sts = workload(docs)
    assert sts["kind"] == "StatefulSet"
    env = {e["name"]: e for e in worker(docs)["env"]}
    assert env["STREAMING_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert worker(docs)["args"][-2:] == ["--processes", "2"]
    (service,) = kind(docs, "Service")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # peers: scale all at once

    monkeypatch.setenv("STREAMING_BOOTSTRAP", "kafka:9092")
    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline_yaml(docs))
    cfg = load_config(path)
    assert cfg.delivery == "exactly-once"
    pod = f"{sts['metadata']['name']}-0"  # what metadata.name is for the first pod, every time
    ids = {Transactional.producer_settings(cfg, f"{pod}-{n}")["transactional.id"] for n in (0, 1)}
    assert ids == {f"{cfg.kafka.group}-{pod}-0", f"{cfg.kafka.group}-{pod}-1"}
    timeout = Transactional.producer_settings(cfg, pod)["transaction.timeout.ms"]
    w = merged("exactly-once")["pipeline"]["worker"]
    assert timeout == w["commit_interval_ms"] + w["drain_timeout_s"] * 1000 + 10_000
    assert timeout > cfg.worker.longest_transaction_ms


@pytest.mark.parametrize("scaler", ["hpa", "keda"])
def test_autoscalers_and_the_budget_act_on_the_statefulset(scaler: str) -> None:
    docs = render(
        {"pipeline": {"delivery": "exactly-once"}, "autoscaling": {scaler: {"enabled": True}}}
    )
    sts = workload(docs)
    (target,) = kind(docs, "HorizontalPodAutoscaler") + kind(docs, "ScaledObject")
    assert target["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    assert "replicas" not in sts["spec"]  # the autoscaler owns it
    (pdb,) = kind(docs, "PodDisruptionBudget")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_a_statefulset_name_too_long_for_its_pods_fails_at_render() -> None:
    vals = {"pipeline": {"delivery": "exactly-once"}}
    fits = "streaming-workers-" + "f" * 34  # 52 characters, the chart's name in it: as is
    chart().render(vals, name=fits, namespace="fraud", is_install=True)
    with pytest.raises(helm.HelmRenderError, match="is 53 characters: at most 52"):
        chart().render(vals, name=fits + "f", namespace="fraud", is_install=True)
    chart().render({}, name=fits + "f", namespace="fraud", is_install=True)  # a Deployment: fine
