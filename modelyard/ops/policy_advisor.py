"""`modelyard policy recommend`: from eval scores, the cheapest pool per task that meets a quality target,
and a cascade threshold calibrated on one half of the cases and checked on the other (RouteLLM-style
quantile calibration). Writes a routing-policy YAML that `router.policy_file` accepts."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from decimal import Decimal

import yaml

from modelyard.core.settings import CascadeSettings
from schemas import TaskType
from streams.rules import Condition, PolicyFile, Rule
from workers.sink.clickhouse import ClickHouseStore


@dataclass(frozen=True)
class PoolQuality:
    task: str
    pool: str
    model: str
    cases: int
    accuracy: float
    cost_per_case: Decimal


@dataclass(frozen=True)
class Recommendation:
    quality: PoolQuality
    meets_target: bool
    reason: str


@dataclass(frozen=True)
class CascadePair:
    """One case answered by both the SLM and the frontier pool."""

    case_id: str
    confidence: float | None
    slm_correct: bool
    frontier_correct: bool
    slm_cost: Decimal
    frontier_cost: Decimal


@dataclass(frozen=True)
class Cascade:
    threshold: float
    calibration_quality: float
    quality: float  # on the held-out half
    cost: Decimal  # held-out, per case
    escalated: float  # held-out share sent on to the frontier
    frontier_quality: float
    frontier_cost: Decimal


def choose_pools(stats: list[PoolQuality], target: float) -> dict[str, Recommendation]:
    """Per task: the cheapest pool at or above target; failing that, the most accurate (flagged)."""
    chosen = {}
    for task in sorted({s.task for s in stats}):
        candidates = [s for s in stats if s.task == task]
        good = [s for s in candidates if s.accuracy >= target]
        if good:
            best = min(good, key=lambda s: (s.cost_per_case, -s.accuracy))
            chosen[task] = Recommendation(
                best, True, f"cheapest pool with accuracy {best.accuracy:.3f} >= {target}"
            )
        else:
            best = max(candidates, key=lambda s: (s.accuracy, -s.cost_per_case))
            chosen[task] = Recommendation(
                best, False, f"no pool reaches {target}; most accurate is {best.accuracy:.3f}"
            )
    return chosen


def _half(case_id: str) -> int:
    return zlib.crc32(case_id.encode()) % 2


def _cascade_outcome(pairs: list[CascadePair], threshold: float) -> tuple[float, Decimal, float]:
    """(quality, cost per case, escalated share) when SLM answers below `threshold` go on to the frontier."""
    kept = [p for p in pairs if p.confidence is not None and p.confidence >= threshold]
    escalated = [p for p in pairs if p not in kept]
    correct = sum(p.slm_correct for p in kept) + sum(p.frontier_correct for p in escalated)
    cost = sum((p.slm_cost for p in pairs), Decimal(0)) + sum(
        (p.frontier_cost for p in escalated), Decimal(0)
    )
    return correct / len(pairs), cost / len(pairs), len(escalated) / len(pairs)


def calibrate_cascade(pairs: list[CascadePair], target: float, steps: int = 20) -> Cascade | None:
    """Lowest confidence threshold (among calibration-half quantiles) whose cascade meets the target."""
    calibration = [p for p in pairs if _half(p.case_id) == 0]
    held_out = [p for p in pairs if _half(p.case_id) == 1]
    confidences = sorted(p.confidence for p in calibration if p.confidence is not None)
    if not calibration or not held_out or not confidences:
        return None
    candidates = sorted(
        {confidences[int(q * (len(confidences) - 1) / steps)] for q in range(steps + 1)} | {1.01}
    )
    threshold = next((t for t in candidates if _cascade_outcome(calibration, t)[0] >= target), 1.01)
    quality, cost, escalated = _cascade_outcome(held_out, threshold)
    frontier_quality = sum(p.frontier_correct for p in held_out) / len(held_out)
    frontier_cost = sum((p.frontier_cost for p in held_out), Decimal(0)) / len(held_out)
    return Cascade(
        threshold,
        _cascade_outcome(calibration, threshold)[0],
        quality,
        cost,
        escalated,
        frontier_quality,
        frontier_cost,
    )


def policy_yaml(
    chosen: dict[str, Recommendation],
    default_pool: str,
    cascades: dict[str, Cascade],
    slm_pool: str = "slm",
    frontier_pool: str = "frontier",
) -> str:
    """The routing policy, with the calibrated thresholds in its `cascades` section: the SLM pool reads them
    from this file (router.policy_file) and escalates answers below them to the frontier pool."""
    rules = [
        Rule(name=f"recommended-{task}", when=Condition(task=[task]), pool=r.quality.pool)
        for task, r in chosen.items()
    ]
    thresholds = {TaskType(task): min(c.threshold, 1.0) for task, c in cascades.items()}
    applied = (
        {slm_pool: CascadeSettings(to_pool=frontier_pool, min_confidence=thresholds)} if thresholds else {}
    )
    policy = PolicyFile(default_pool=default_pool, rules=rules, cascades=applied)
    header = "# Recommended by `modelyard policy recommend` from eval results.\n"
    for task, cascade in cascades.items():
        header += (
            f"# cascade {task}: {slm_pool} escalates answers with confidence < {cascade.threshold:.3f} "
            f"to {frontier_pool} (held-out quality {cascade.quality:.3f}, {cascade.escalated:.0%} escalated)\n"
        )
    return header + yaml.safe_dump(policy.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def load_quality(store: ClickHouseStore, run: str) -> list[PoolQuality]:
    rows = store.query(
        "SELECT task_type, pool, any(model), count(), avg(correct), sum(cost_usd) / count() FROM eval_results FINAL "
        "WHERE run = {run:String} GROUP BY task_type, pool ORDER BY task_type, pool",
        {"run": run},
    )
    return [PoolQuality(t, p, m, int(n), float(acc), Decimal(cost)) for t, p, m, n, acc, cost in rows]


def load_pairs(store: ClickHouseStore, run: str, slm: str, frontier: str) -> dict[str, list[CascadePair]]:
    rows = store.query(
        "SELECT s.task_type, s.case_id, s.confidence, s.correct, f.correct, s.cost_usd, f.cost_usd "
        "FROM (SELECT * FROM eval_results FINAL WHERE run = {run:String} AND pool = {slm:String}) AS s "
        "INNER JOIN (SELECT * FROM eval_results FINAL WHERE run = {run:String} AND pool = {frontier:String}) AS f "
        "ON s.case_id = f.case_id",
        {"run": run, "slm": slm, "frontier": frontier},
    )
    pairs: dict[str, list[CascadePair]] = {}
    for task, case_id, confidence, s_ok, f_ok, s_cost, f_cost in rows:
        pairs.setdefault(task, []).append(
            CascadePair(case_id, confidence, bool(s_ok), bool(f_ok), Decimal(s_cost), Decimal(f_cost))
        )
    return pairs


def latest_run(store: ClickHouseStore) -> str | None:
    rows = store.query("SELECT run FROM eval_results ORDER BY scored_at DESC LIMIT 1")
    return rows[0][0] if rows else None
