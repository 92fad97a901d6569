"""RouteLLM's metrics as evaluate.py computes them, checked on curves worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.ops.routing_quality import Curve, oracle_curve, quality, random_curve, threshold_curve


def test_apgr_and_cpt_of_a_hand_worked_curve() -> None:
    # weak 60%, strong 80%; the router recovers the whole gap with half the strong calls
    curve = Curve(np.array([0.0, 50.0, 100.0]), np.array([60.0, 80.0, 80.0]))
    q = quality(curve, strong_accuracy=80.0, weak_accuracy=60.0)
    # AUC = 0.5 * (60 + 80) / 2 + 0.5 * 80 = 75; weak AUC 60, strong AUC 80 -> APGR (75 - 60) / 20
    assert q.auc == pytest.approx(75.0) and q.apgr == pytest.approx(0.75)
    assert q.cpt50 == pytest.approx(25.0) and q.cpt80 == pytest.approx(40.0)


def test_thresholds_are_the_scores_deciles() -> None:
    scores = np.arange(100, dtype=float)
    strong, weak = np.ones(100), np.zeros(100)
    curve = threshold_curve(scores, strong, weak)
    assert curve.strong_pct.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    assert curve.accuracy.tolist() == curve.strong_pct.tolist()  # every strong call is a right answer here


def test_random_is_a_half_and_the_oracle_beats_the_strong_model() -> None:
    rng = np.random.default_rng(3)
    weak = (rng.random(4000) < 0.68).astype(float)
    strong = (rng.random(4000) < 0.8).astype(float)  # independent: some items only the weak model gets right
    assert quality(
        random_curve(strong, weak, seed=0), strong.mean() * 100, weak.mean() * 100
    ).apgr == pytest.approx(0.5, abs=0.03)
    assert quality(oracle_curve(strong, weak), strong.mean() * 100, weak.mean() * 100).apgr > 1.0
