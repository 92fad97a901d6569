"""Router quality on recorded answers, computed as RouteLLM's `routellm/evals/evaluate.py` computes it.

A router gives each item a score (its estimate of how much the strong model gains over the weak one). Like
RouteLLM's MMLU benchmark, the thresholds are the scores' deciles (`pd.qcut(scores, 10, retbins=True)`: 11 edges,
the same as numpy's linear quantiles); for each edge the items scoring >= it (> it for the last edge) go to the
strong model, giving one point (strong-call %, accuracy %). Then, over those points sorted by strong-call %:

* AUC: the trapezoid area under accuracy against strong-call share (`np.trapz(acc, pct / 100)`);
* APGR: (AUC - weak AUC) / (strong AUC - weak AUC), the weak and strong AUCs being their accuracies held over the
  same x range;
* CPT(x%): the strong-call % at which accuracy reaches weak + x% of (strong - weak), by `np.interp`.

The random router is averaged over 10 draws (RouteLLM: `--random-iters 10`, points grouped by strong %). The
oracle gives the best accuracy any router can reach with a given share of strong calls (RouteLLM's
`get_optimal_accuracy`), at 0%, 10%, ..., 100%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    strong_pct: np.ndarray  # sorted ascending
    accuracy: np.ndarray  # percent


@dataclass(frozen=True)
class Quality:
    apgr: float
    cpt50: float  # strong-call percent
    cpt80: float
    auc: float


def threshold_curve(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray, num_results: int = 10) -> Curve:
    """RouteLLM's MMLU.evaluate(): deciles of the scores as thresholds, one (strong %, accuracy %) per edge."""
    thresholds = np.quantile(scores, np.linspace(0, 1, num_results + 1))
    points = []
    for i, threshold in enumerate(thresholds):
        selected = scores >= threshold if i != len(thresholds) - 1 else scores > threshold
        points.append((selected.mean() * 100, np.where(selected, strong, weak).mean() * 100))
    points.sort(key=lambda p: p[0])  # stable, like pandas' sort_values on strong_percentage
    return Curve(np.array([p[0] for p in points]), np.array([p[1] for p in points]))


def quality(curve: Curve, strong_accuracy: float, weak_accuracy: float) -> Quality:
    """APGR and CPT(50%) / CPT(80%) of a curve (accuracies in percent), as generate_results() computes them."""
    x = curve.strong_pct / 100
    auc = float(np.trapezoid(curve.accuracy, x))
    weak_auc = float(np.trapezoid(np.full(len(x), weak_accuracy), x))
    strong_auc = float(np.trapezoid(np.full(len(x), strong_accuracy), x))

    def cpt(share: float) -> float:
        return float(
            np.interp(
                share * (strong_accuracy - weak_accuracy) + weak_accuracy, curve.accuracy, curve.strong_pct
            )
        )

    return Quality((auc - weak_auc) / (strong_auc - weak_auc), cpt(0.5), cpt(0.8), auc)


def random_curve(strong: np.ndarray, weak: np.ndarray, seed: int, iterations: int = 10) -> Curve:
    """RouteLLM's random router: uniform scores, `iterations` draws, accuracy averaged per strong %."""
    rng = np.random.default_rng(seed)
    by_pct: dict[float, list[float]] = {}
    for _ in range(iterations):
        curve = threshold_curve(rng.random(len(strong)), strong, weak)
        for pct, acc in zip(curve.strong_pct, curve.accuracy, strict=True):
            by_pct.setdefault(float(pct), []).append(float(acc))
    pcts = sorted(by_pct)
    return Curve(np.array(pcts), np.array([np.mean(by_pct[p]) for p in pcts]))


def oracle_curve(strong: np.ndarray, weak: np.ndarray, steps: int = 10) -> Curve:
    """RouteLLM's get_optimal_accuracy() at 0, 10, ..., 100% strong calls."""
    total, weak_right = len(strong), int(weak.sum())
    only_strong_right = int(((weak == 0) & (strong == 1)).sum())
    shares = np.linspace(0, 1, steps + 1)
    accuracy = [(weak_right + min(total * s, only_strong_right)) / total * 100 for s in shares]
    return Curve(shares * 100, np.array(accuracy))


def share_at(curve: Curve, accuracy_pct: float) -> float:
    """Strong-call percent a router needs to reach an accuracy (RouteLLM's CPT for an absolute target)."""
    return float(np.interp(accuracy_pct, curve.accuracy, curve.strong_pct))


@dataclass(frozen=True)
class Summary:
    """Mean and spread (population standard deviation) of one figure over several splits."""

    mean: float
    spread: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(float(np.mean(values)), float(np.std(values)), tuple(float(v) for v in values))


def category_scores(
    train_categories: Sequence[str | None],
    train_strong: np.ndarray,
    train_weak: np.ndarray,
    test_categories: Sequence[str | None],
    prior: float = 5.0,
) -> np.ndarray:
    """The per-category baseline: each category's strong minus weak success rate on the training items,
    shrunk towards the overall rates by `prior` pseudo-items (an unseen category gets the overall gain)."""
    overall_strong, overall_weak = float(train_strong.mean()), float(train_weak.mean())
    sums: dict[str | None, list[float]] = {}
    for category, s, w in zip(train_categories, train_strong, train_weak, strict=True):
        totals = sums.setdefault(category, [0.0, 0.0, 0.0])
        totals[0], totals[1], totals[2] = totals[0] + s, totals[1] + w, totals[2] + 1
    gains = {
        c: (s + prior * overall_strong) / (n + prior) - (w + prior * overall_weak) / (n + prior)
        for c, (s, w, n) in sums.items()
    }
    return np.array([gains.get(c, overall_strong - overall_weak) for c in test_categories])
