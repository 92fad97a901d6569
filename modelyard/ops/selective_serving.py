"""Selective serving: which confidence threshold lets a student answer at a target accuracy, the rest going on
to the frontier through the cascade. Used by `modelyard distill` (the threshold it registers and writes into
the proposed policy) and by modelyard/ops/student_quality.py (the learning-curve benchmark).

Two readings of the target:

- `served` (`serving_threshold`): the answers the student gives are at the target;
- `end_to_end` (`end_to_end_threshold`): the job's answers as a whole are, the escalated ones being the
  frontier's own (whose agreement with itself is 1, or `teacher_accuracy`). Fewer items escalate for the same
  target: at a 0.95 target a student serving 93% of items may be 0.947 accurate on them.
"""

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


def end_to_end_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float, teacher_accuracy: float = 1.0
) -> float:
    """The lowest confidence at which the cascade's answers as a whole (the student's at and above it, the
    teacher's below it, right with `teacher_accuracy`) are at `target` on held-out answers, by both the measured
    answers and the calibrated confidences, with the same one-standard-error margin as `serving_threshold`
    (over all held-out items: every one counts in the end-to-end figure)."""
    order = np.argsort(-confidence)
    count = len(order)
    served = np.arange(1, count + 1)
    escalated = teacher_accuracy * (count - served)
    measured = (np.cumsum(correct[order]) + escalated) / count
    expected = (np.cumsum(confidence[order]) + escalated) / count
    margin = MARGIN_Z * np.sqrt(target * (1 - target) / max(count, 1))
    ok = np.where((measured >= target + margin) & (expected >= target))[0]
    return float(confidence[order][ok.max()]) if len(ok) else SERVE_NOTHING


def cascade_threshold(
    confidence: np.ndarray, correct: np.ndarray, target: float, reading: str = "served"
) -> float:
    """The threshold for `target` read as `served` or `end_to_end` (see the module's docstring)."""
    if reading == "served":
        return serving_threshold(confidence, correct, target)
    if reading == "end_to_end":
        return end_to_end_threshold(confidence, correct, target)
    raise ValueError(f"unknown target reading {reading!r}; known: served, end_to_end")


def coverage_at(confidence: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The largest share of items, most confident first, whose accuracy is at least `target`."""
    order = np.argsort(-confidence)
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.where(accuracy >= target)[0]
    return float((ok.max() + 1) / len(order)) if len(ok) else 0.0
