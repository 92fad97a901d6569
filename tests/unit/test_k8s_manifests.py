"""infra/k8s/ validated for real: Kubernetes objects against the API's JSON schemas (kubernetes-validate,
bundled, offline, strict: unknown fields fail), KEDA ScaledObjects against infra/keda-scaledobject.schema.json;
then the cross-references a schema cannot see (consumer groups, topics, Secret keys, the config itself)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelyard.core.settings import PROJECT_ROOT, Settings, load_settings

K8S = PROJECT_ROOT / "infra" / "k8s"
KEDA_SCHEMA = json.loads((PROJECT_ROOT / "infra" / "keda-scaledobject.schema.json").read_text())
KEDA_AUTH_SCHEMA = json.loads((PROJECT_ROOT / "infra" / "keda-triggerauthentication.schema.json").read_text())
KUBERNETES_VERSION = "1.33.0"


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def validate(doc: dict[str, Any]) -> None:
    if doc["kind"] == "ScaledObject":
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(doc)
    elif doc["kind"] == "TriggerAuthentication":
        jsonschema.Draft202012Validator(KEDA_AUTH_SCHEMA).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("k8s") / "modelyard.yaml"
    path.write_text(by_kind("ConfigMap")["modelyard-config"]["data"]["modelyard.yaml"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELYARD_CONFIG", str(path))
        return load_settings()


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_passes_its_schema(doc: dict[str, Any]) -> None:
    validate(doc)


def test_the_validators_reject_what_they_should() -> None:
    deployment = copy.deepcopy(by_kind("Deployment")["modelyard-router"])
    deployment["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(by_kind("ScaledObject")["modelyard-pool-slm"])
    del scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    with pytest.raises(jsonschema.ValidationError, match="consumerGroup"):
        validate(scaled)


def test_every_process_kind_has_a_deployment_with_probes_on_its_metrics_port(config: Settings) -> None:
    deployments = by_kind("Deployment")
    expected = {"modelyard-router": ["router"], "modelyard-sink": ["sink"]}
    expected |= {f"modelyard-pool-{pool}": ["pool", pool] for pool in config.pools}
    for name, args in expected.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == args
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
        assert env["MODELYARD_METRICS__PORT"] == str(port)
        assert (
            container["readinessProbe"]["httpGet"]["path"],
            container["livenessProbe"]["httpGet"]["path"],
        ) == ("/readyz", "/healthz")


def test_each_pool_scales_on_its_own_consumer_group_lag(config: Settings) -> None:
    scaled, deployments = by_kind("ScaledObject"), by_kind("Deployment")
    assert set(scaled) == {f"modelyard-pool-{pool}" for pool in config.pools}
    for pool in config.pools:
        spec = scaled[f"modelyard-pool-{pool}"]["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert (
            trigger["metadata"]["consumerGroup"] == f"{config.app_id}.pool.{pool}"
        )  # as workers/kafka_clients.py names it
        assert trigger["metadata"]["topic"] == config.kafka.pool_topic(pool)
        assert trigger["metadata"]["bootstrapServers"] == config.kafka.bootstrap_servers
        assert spec["maxReplicaCount"] <= config.kafka.pool_partitions.get(pool, config.kafka.partitions)


def test_keda_reads_lag_with_the_pools_kafka_credentials_from_the_secret() -> None:
    (secret,) = by_kind("Secret").values()
    auths = by_kind("TriggerAuthentication")
    for scaled in by_kind("ScaledObject").values():
        (trigger,) = scaled["spec"]["triggers"]
        auth = auths[trigger["authenticationRef"]["name"]]
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert {"sasl", "username", "password", "tls"} <= set(refs)
        assert all(
            ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
            for ref in refs.values()
        )
    broken = copy.deepcopy(next(iter(auths.values())))
    broken["spec"]["secretTargetRef"][0]["paramter"] = broken["spec"]["secretTargetRef"][0].pop("parameter")
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_secrets_are_referenced_never_inlined(config: Settings) -> None:
    (secret,) = by_kind("Secret").values()
    keys = set(secret["stringData"])
    assert all(value == "<set-me>" for value in secret["stringData"].values())
    for deployment in by_kind("Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys
                else:
                    assert not any(word in entry["name"] for word in ("KEY", "PASSWORD")), entry["name"]
    assert not any(
        s.get_secret_value() for s in [config.clickhouse.password, config.kafka.sasl_password] if s
    )


def test_vllm_gets_one_gpu_and_the_slm_pool_points_at_its_service(config: Settings) -> None:
    vllm = by_kind("Deployment")["vllm"]["spec"]["template"]["spec"]["containers"][0]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    service = by_kind("Service")["vllm"]
    port = service["spec"]["ports"][0]["port"]
    assert config.providers["vllm"].base_url == f"http://{service['metadata']['name']}:{port}/v1"
    assert config.pools["slm"].provider == "vllm"


def test_config_volume_matches_the_configmap() -> None:
    for deployment in by_kind("Deployment").values():
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        for volume in volumes:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in by_kind("ConfigMap")
