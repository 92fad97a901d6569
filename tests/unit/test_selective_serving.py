"""Cascade thresholds: the two readings of the target, judged on answers the threshold was not fitted on."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.ops.selective_serving import (
    SERVE_NOTHING,
    cascade_threshold,
    end_to_end_threshold,
    serving_threshold,
)


def calibrated_answers(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences right as often as they say (a calibrated student), skewed towards sure answers."""
    rng = np.random.default_rng(seed)
    confidence = 1 - rng.beta(1.0, 6.0, count)
    return confidence, rng.random(count) < confidence


def cascade(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float]:
    """(end-to-end accuracy with a teacher that is always right, share escalated)."""
    served = confidence >= threshold
    return float(np.where(served, correct, True).mean()), float((~served).mean())


def test_end_to_end_reading_escalates_less_and_holds_the_target_on_fresh_answers() -> None:
    fitted_on, judged_on = calibrated_answers(3000, seed=1), calibrated_answers(20000, seed=2)
    served_threshold = serving_threshold(*fitted_on, 0.95)
    whole_threshold = end_to_end_threshold(*fitted_on, 0.95)
    assert whole_threshold < served_threshold
    accuracy, escalated = cascade(*judged_on, whole_threshold)
    served_accuracy, served_escalated = cascade(*judged_on, served_threshold)
    assert accuracy >= 0.95 and escalated < served_escalated
    assert served_accuracy > accuracy  # the served reading buys accuracy the target did not ask for


def test_an_unreachable_end_to_end_target_escalates_everything() -> None:
    confidence, correct = calibrated_answers(500, seed=3)
    assert end_to_end_threshold(confidence, correct, 0.999, teacher_accuracy=0.9) == SERVE_NOTHING


def test_an_unknown_reading_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown target reading 'best'"):
        cascade_threshold(np.array([0.9]), np.array([True]), 0.95, "best")
