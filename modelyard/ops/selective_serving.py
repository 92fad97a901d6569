"""Selective serving: which confidence threshold lets a student answer at a target accuracy, the rest going on
to the frontier through the cascade. Used by `modelyard distill` (the threshold it registers and writes into
the proposed policy) and by modelyard/ops/student_quality.py (the learning-curve benchmark)."""

from __future__ import annotations

import numpy as np

SERVE_NOTHING = 1.01  # above any confidence: every answer escalates
MARGIN_Z = 1.0  # the served accuracy must clear the target by this many standard errors of its estimate


def serving_threshold(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest confidence whose served set (that confidence and above) is at `target` accuracy on held-out
    answers, by both the measured answers and the calibrated confidences, with a margin for the estimate's
    noise: measured >= target + z * sqrt(target * (1 - target) / served). The plain prefix maximum is
    optimistic (the best of many prefixes of a few hundred items: 0.938 served where 0.95 was asked on
    Banking77); SERVE_NOTHING if no threshold qualifies."""
    order = np.argsort(-confidence)
    ranks = np.arange(1, len(order) + 1)
    measured = np.cumsum(correct[order]) / ranks
    expected = np.cumsum(confidence[order]) / ranks
    margin = MARGIN_Z * np.sqrt(target * (1 - target) / ranks)
    ok = np.where((measured >= target + margin) & (expected >= target))[0]
    return float(confidence[order][ok.max()]) if len(ok) else SERVE_NOTHING


def coverage_at(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The largest share of items, most confident first, whose accuracy is at least `target`."""
    order = np.argsort(-confidence)
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.where(accuracy >= target)[0]
    return float((ok.max() + 1) / len(order)) if len(ok) else 0.0
