"""The learned router: expected pools on data with known per-category success, calibration on held-out items,
versions on disk, and its cost per item."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from modelyard.ops.routing_fit import Outcome, fit_router, routed_figures
from streams.learned_routing import ItemKeys, RoutingModel, RoutingRegistry, choose

POOLS = ["cheap", "mid", "strong"]
COSTS = [0.1, 1.0, 10.0]
# P(right) per category and pool: the cheapest pool that is good enough differs per category
SUCCESS = {"easy": (0.97, 0.98, 0.99), "medium": (0.35, 0.96, 0.97), "hard": (0.15, 0.30, 0.96)}
VOCABULARY = {c: [f"{c}{i}" for i in range(30)] for c in SUCCESS}
COMMON = [f"w{i}" for i in range(300)]


def items(n: int, seed: int, with_category: bool = True) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        category = list(SUCCESS)[i % 3]
        words = list(rng.choice(VOCABULARY[category], 3)) + list(rng.choice(COMMON, 12))
        right = tuple(float(rng.random() < p) for p in SUCCESS[category])
        keys = ItemKeys("classification", "acme", None, category if with_category else None, 7)
        out.append(Outcome(" ".join(words) + f" #{seed}-{i}", keys, right))
    return out


@pytest.fixture(scope="module")
def model() -> RoutingModel:
    return fit_router(items(1500, seed=1), POOLS, COSTS, target=0.95, seed=0)


def test_each_category_goes_to_its_cheapest_good_enough_pool(model: RoutingModel) -> None:
    """Within 0.1 of the best: easy items to the cheap pool, medium to the mid one, hard to the strong one."""
    test = items(300, seed=2)
    routed = model.route([o.text for o in test], [o.keys for o in test], margin=0.1)
    chosen = np.array(model.card.pools)[routed.choices]
    for category, expected in [("easy", "cheap"), ("medium", "mid"), ("hard", "strong")]:
        picks = chosen[[o.keys.category == category for o in test]]
        assert (picks == expected).mean() >= 0.95, (category, np.unique(picks, return_counts=True))


def test_the_calibrated_margin_keeps_the_target_on_held_out_items(model: RoutingModel) -> None:
    """The margin fitted for 0.95 overall accuracy: cheaper pools take what they can, the target holds."""
    test = items(1500, seed=6)
    routed = model.route([o.text for o in test], [o.keys for o in test])
    right = np.array([o.right for o in test])[np.arange(len(test)), routed.choices]
    assert right.mean() >= 0.95 - 0.015, right.mean()
    assert (routed.choices == 0).mean() > 0.3  # at least the easy third goes to the cheap pool


def test_the_text_alone_carries_the_category() -> None:
    """Without the metadata key, the category's words route it (features are the item's own text too), at the
    margin calibrated for the target."""
    trained = fit_router(items(1500, seed=1, with_category=False), POOLS, COSTS, target=0.95, seed=0)
    test = items(300, seed=3, with_category=False)
    routed = trained.route([o.text for o in test], [o.keys for o in test])
    expected = [{"easy": 0, "medium": 1, "hard": 2}[o.text.split()[0].rstrip("0123456789")] for o in test]
    assert (routed.choices == np.array(expected)).mean() >= 0.9


def test_calibration_holds_on_held_out_items() -> None:
    """Per item, success depends on its words (not only a category): expected accuracy (the mean predicted
    probability of the chosen pool) within 2 points of the measured accuracy on items never trained on."""
    rng = np.random.default_rng(7)
    signal = {w: rng.normal(0, 1.2) for w in COMMON}

    def noisy(n: int, seed: int) -> list[Outcome]:
        r = np.random.default_rng(seed)
        out = []
        for _i in range(n):
            words = list(r.choice(COMMON, 8))
            z = sum(signal[w] for w in words) / 3
            p = (1 / (1 + np.exp(-(z - 0.3))), 1 / (1 + np.exp(-(z + 2.0))))
            out.append(
                Outcome(
                    " ".join(words),
                    ItemKeys("other", "acme", None, None, 6),
                    tuple(float(r.random() < q) for q in p),
                )
            )
        return out

    model = fit_router(noisy(3000, 11), ["weak", "strong"], [1.0, 20.0], target=None, seed=0)
    test = noisy(3000, 12)
    raw, calibrated = model.scores([o.text for o in test], [o.keys for o in test])
    y = np.array([o.right for o in test])
    figures = routed_figures(
        raw, calibrated, y, model.card.cost_per_item_usd, model.card.pools, model.card.margin
    )
    assert 0.05 < figures.pool_shares["strong"] < 0.95, figures
    assert abs(figures.expected_accuracy - figures.measured_accuracy) <= 0.02, figures


def test_versions_persist_as_arrays_and_json(model: RoutingModel, tmp_path: Path) -> None:
    registry = RoutingRegistry(tmp_path / "routing")
    assert registry.load_current() is None
    assert registry.register(model) == "v1" and registry.register(model) == "v2"
    loaded = registry.load_current()
    assert loaded is not None and loaded.card.version == "v2" and loaded.card.pools == model.card.pools
    test = items(30, seed=4)
    texts, keys = [o.text for o in test], [o.keys for o in test]
    np.testing.assert_allclose(loaded.predict(texts, keys), model.predict(texts, keys), atol=1e-5)
    assert not list((tmp_path / "routing").rglob("*.pkl"))


def test_choose_takes_the_cheapest_within_the_margin() -> None:
    p = np.array([[0.70, 0.80, 0.90], [0.89, 0.90, 0.91], [0.2, 0.9, 0.3]])
    assert choose(p, 0.05).tolist() == [2, 0, 1]
    assert choose(p, 0.25).tolist() == [0, 0, 1]


def test_routing_costs_under_ten_microseconds_an_item(model: RoutingModel) -> None:
    test = items(1000, seed=5)
    texts, keys = [o.text for o in test], [o.keys for o in test]
    model.route(texts, keys)  # warm: key memo, numpy paths
    best = min(_timed(model, texts, keys) for _ in range(5))
    assert best / len(texts) < 10e-6, (
        f"{best / len(texts) * 1e6:.1f} CPU us an item"
    )  # process time: load-proof


def _timed(model: RoutingModel, texts: list[str], keys: list[ItemKeys]) -> float:
    started = time.process_time()
    model.route(texts, keys)
    return time.process_time() - started
