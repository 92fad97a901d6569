"""infra/prometheus/alerts.yaml: valid rule groups whose expressions use metrics modelyard exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import modelyard.core.observability  # noqa: F401 - registers the metrics

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "alerts.yaml"


def exported_names() -> set[str]:
    names = set()
    for collector in list(REGISTRY._collector_to_names):
        names |= set(REGISTRY._collector_to_names[collector])
    return names


def test_alert_rules_reference_exported_metrics() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(rule) for rule in rules)
    exported = exported_names()
    for rule in rules:
        metrics = set(re.findall(r"\bmodelyard_[a-z_]+\b", rule["expr"]))
        assert metrics and metrics <= exported, (rule["alert"], metrics - exported)
    low = next(rule for rule in rules if rule["alert"] == "ModelyardShadowAgreementLow")
    assert "modelyard_shadow_agreement_low" in low["expr"] and "task" in low["expr"]
