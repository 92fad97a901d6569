"""Recommendations on synthetic eval data with known per-pool accuracies."""

from __future__ import annotations

import os
import random
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core.settings import CascadeSettings, load_settings
from modelyard.ops.policy_advisor import (
    CascadePair,
    PoolQuality,
    calibrate_cascade,
    choose_pools,
    policy_yaml,
)
from schemas import TaskType
from streams.rules import load_policy_file
from workers.pools.cascade import PolicyCascade

STATS = [
    PoolQuality("classification", "slm", "small", 400, 0.97, Decimal("0.00001")),
    PoolQuality("classification", "frontier", "big", 400, 0.99, Decimal("0.002")),
    PoolQuality("extraction", "slm", "small", 400, 0.80, Decimal("0.00002")),
    PoolQuality("extraction", "frontier", "big", 400, 0.96, Decimal("0.003")),
    PoolQuality("extraction", "mid", "medium", 400, 0.955, Decimal("0.0005")),
    PoolQuality("generation", "slm", "small", 400, 0.50, Decimal("0.00001")),
    PoolQuality("generation", "frontier", "big", 400, 0.90, Decimal("0.004")),
]


def test_cheapest_pool_meeting_the_target_per_task() -> None:
    chosen = choose_pools(STATS, target=0.95)
    assert {t: r.quality.pool for t, r in chosen.items()} == {
        "classification": "slm",
        "extraction": "mid",
        "generation": "frontier",
    }
    assert chosen["classification"].meets_target and not chosen["generation"].meets_target


def test_written_policy_is_valid_for_the_router(tmp_path: Path) -> None:
    chosen = {t: r for t, r in choose_pools(STATS, 0.95).items() if r.quality.pool in ("slm", "frontier")}
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(chosen, "frontier", {}))
    policy = load_policy_file(path, set(load_settings().pools))
    assert [(r.name, r.pool) for r in policy.rules] == [
        ("recommended-classification", "slm"),
        ("recommended-generation", "frontier"),
    ]


def synthetic_pairs(n: int = 2000, seed: int = 3) -> list[CascadePair]:
    """SLM right 98% of the time when confident (>= 0.8), 50% below; the frontier is right 97%."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        confidence = rng.random()
        slm_ok = rng.random() < (0.98 if confidence >= 0.8 else 0.5)
        pairs.append(
            CascadePair(
                f"case-{i}", confidence, slm_ok, rng.random() < 0.97, Decimal("0.00001"), Decimal("0.002")
            )
        )
    return pairs


def test_cascade_threshold_is_calibrated_and_holds_on_held_out_data() -> None:
    cascade = calibrate_cascade(synthetic_pairs(), target=0.95)
    assert cascade is not None
    assert 0.3 <= cascade.threshold <= 0.85
    assert cascade.calibration_quality >= 0.95
    assert cascade.quality >= 0.94  # held-out: close to the target
    assert cascade.cost < cascade.frontier_cost * Decimal(
        "0.8"
    )  # cheaper than sending everything to the frontier
    assert 0.1 < cascade.escalated < 0.8


def test_unreachable_target_escalates_everything() -> None:
    cascade = calibrate_cascade(synthetic_pairs(), target=0.999)
    assert cascade is not None and cascade.threshold > 1 and cascade.escalated == pytest.approx(1.0)


def test_the_calibrated_threshold_is_in_the_policy_the_pool_applies(tmp_path: Path) -> None:
    cascade = calibrate_cascade(synthetic_pairs(), target=0.95)
    assert cascade is not None
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml({}, "frontier", {"classification": cascade}, "slm", "frontier"))
    assert set(load_policy_file(path, set(load_settings().pools)).cascades) == {
        "slm"
    }  # the router accepts it
    configured = CascadeSettings(to_pool="frontier", min_confidence={TaskType.CLASSIFICATION: 0.6})
    applied = PolicyCascade(path, "slm", configured, reload_interval_s=0.0)
    first = applied.current()
    assert first is not None and first.to_pool == "frontier"
    assert first.min_confidence[TaskType.CLASSIFICATION] == pytest.approx(cascade.threshold)
    assert PolicyCascade(path, "frontier", None, 0.0).current() is None  # no section for it: its own setting
    path.write_text(policy_yaml({}, "frontier", {}))  # the file changes: no cascade section any more
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert applied.current() == configured
    path.write_text("cascades: [not, a, mapping")  # broken: the cascade already applied stays
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    assert applied.current() == configured


def test_a_cascade_section_to_an_unconfigured_pool_is_refused(tmp_path: Path) -> None:
    """The router refuses such a file; a pool reading it keeps the cascade it applies instead of producing to
    a topic no pool consumes."""
    path = tmp_path / "policy.yaml"
    path.write_text("cascades:\n  slm:\n    to_pool: nowhere\n    min_confidence: {classification: 0.9}\n")
    configured = CascadeSettings(to_pool="frontier", min_confidence={TaskType.CLASSIFICATION: 0.6})
    pools = set(load_settings().pools)
    assert PolicyCascade(path, "slm", configured, 0.0, known_pools=pools).current() == configured
    unchecked = PolicyCascade(path, "slm", configured, 0.0).current()
    assert unchecked is not None and unchecked.to_pool == "nowhere"
