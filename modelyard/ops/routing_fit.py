"""Fit the learned router (`modelyard routing fit`): per item, which pool answers acceptably.

Labelled outcomes come from recordings (a model's recorded score or output against the expected answer) or from
the system's own tables: `eval_results` (every case run through chosen pools, scored), joined with `job_inputs`
for the text. Each outcome is an item and, per pool, whether that pool's answer was right.

The fit (features and decision rule: streams/learned_routing.py):

1. inverse document frequencies of the hashed words over the training items (words seen in one item only get
   weight 0: they cannot generalise);
2. per pool, a logistic regression on the items whose outcome for that pool is known;
3. out-of-fold logits (K folds by a seeded hash of the text) give each pool's Platt scaling, so the calibrated
   probabilities are calibrated on items the model did not see;
4. the margin: on the same out-of-fold items, the largest margin (the most items on cheaper pools) whose measured
   accuracy still meets the target. The final weights are then fitted on every item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression

from modelyard.core._exceptions import ConfigError
from schemas.recording import Recording
from streams.learned_routing import (
    KEY_DIMS,
    TEXT_DIMS,
    ItemKeys,
    RoutingCard,
    RoutingModel,
    choose,
    item_keys,
    key_rows,
    text_rows,
    word_entries,
)
from workers.sink.clickhouse import ClickHouseStore

REGULARISATION_C = 1.0
FOLDS = 5
MIN_DOCUMENT_FREQUENCY = 2


@dataclass(frozen=True)
class Outcome:
    """One labelled item: its text, its keys, and per pool 1.0 (right), 0.0 (wrong) or NaN (not tried)."""

    text: str
    keys: ItemKeys
    right: tuple[float, ...]


def outcomes_from_recordings(
    recordings: Sequence[Recording],
    pool_models: dict[str, str],
    task: str = "other",
    tenant: str = "default",
    category_key: str = "category",
) -> list[Outcome]:
    """Per recording, whether each pool's model (pool -> recorded model name) was right."""
    pools = list(pool_models)
    out = []
    for r in recordings:
        right = tuple(_recorded_right(r, pool_models[p]) for p in pools)
        if all(np.isnan(right)):
            continue
        metadata = {category_key: r.category} if r.category is not None else {}
        keys = item_keys(task, tenant, r.label_set(), metadata, r.text(), category_key)
        out.append(Outcome(r.text(), keys, right))
    return out


def _recorded_right(r: Recording, model: str) -> float:
    answer = r.answers.get(model)
    if answer is None:
        return float("nan")
    if answer.score is not None:
        return float(answer.score >= 0.5)
    if r.expected is None:
        return float("nan")
    return float(str(answer.output).strip() == str(r.expected))


def fold_of(text: str, seed: int, folds: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest(), "big") % folds


def inverse_document_frequencies(texts: Sequence[str], dims: int = TEXT_DIMS) -> np.ndarray:
    rows, cols = word_entries(texts, dims)
    present = np.unique(rows * dims + cols) % dims
    df = np.bincount(present, minlength=dims)
    idf = np.log((1 + len(texts)) / (1 + df)) + 1.0
    idf[df < MIN_DOCUMENT_FREQUENCY] = 0.0
    return idf


def feature_matrix(outcomes: Sequence[Outcome], idf: np.ndarray, key_dims: int = KEY_DIMS) -> csr_matrix:
    text = text_rows([o.text for o in outcomes], idf)
    keys = key_rows([o.keys for o in outcomes], len(idf), key_dims)
    rows, cols = np.concatenate([text.rows, keys.rows]), np.concatenate([text.cols, keys.cols])
    return csr_matrix(
        (np.concatenate([text.values, keys.values]), (rows, cols)), shape=(len(outcomes), len(idf) + key_dims)
    )


def _fit_pool(x: csr_matrix, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    known = ~np.isnan(y)
    labels = y[known]
    if len(np.unique(labels)) < 2:  # always right (or always wrong): a constant
        rate = float(np.clip(labels.mean() if len(labels) else 0.5, 1e-3, 1 - 1e-3))
        return np.zeros(x.shape[1]), float(np.log(rate / (1 - rate)))
    fitted = LogisticRegression(C=c, solver="newton-cg", max_iter=500).fit(x[known], labels)
    return fitted.coef_[0], float(fitted.intercept_[0])


def _platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    known = ~np.isnan(y)
    if len(np.unique(y[known])) < 2:
        return 1.0, 0.0
    fitted = LogisticRegression(C=1e6).fit(logits[known, None], y[known])
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])


@dataclass(frozen=True)
class FitReport:
    margin: float
    measured_accuracy: float
    expected_accuracy: float
    pool_shares: dict[str, float]
    pool_accuracy: dict[str, float]
    cost_per_item_usd: float


def fit_router(
    outcomes: Sequence[Outcome],
    pools: Sequence[str],
    costs: Sequence[float],
    target: float | None,
    category_key: str = "category",
    seed: int = 0,
    c: float = REGULARISATION_C,
    folds: int = FOLDS,
) -> RoutingModel:
    """A calibrated routing model over `pools` (costs: per item, same order), its margin set for `target`."""
    if len(pools) < 2 or len(pools) != len(costs):
        raise ConfigError(
            f"routing fit: needs two or more pools, each with a cost (got {list(pools)}, {list(costs)})"
        )
    if len(outcomes) < 4 * folds:
        raise ConfigError(
            f"routing fit: {len(outcomes)} labelled items are too few; it needs at least {4 * folds}"
        )
    order = np.argsort(np.asarray(costs, dtype=float), kind="stable")
    pools, costs = [pools[i] for i in order], [float(costs[i]) for i in order]
    y = np.array([[o.right[i] for i in order] for o in outcomes], dtype=float)
    idf = inverse_document_frequencies([o.text for o in outcomes])
    x = feature_matrix(outcomes, idf)
    oof = out_of_fold_logits(outcomes, x, y, seed, c, folds)
    platt = np.array([_platt(oof[:, p], y[:, p]) for p in range(len(pools))])
    raw, calibrated = 1 / (1 + np.exp(-oof)), 1 / (1 + np.exp(-(oof * platt[:, 0] + platt[:, 1])))
    if target is None:  # the best single pool's accuracy, less one point
        target = round(float(np.nanmax(np.nanmean(y, axis=0))) - 0.01, 4)
    report = choose_margin(raw, calibrated, y, costs, pools, target)
    fitted = [_fit_pool(x, y[:, p], c) for p in range(len(pools))]
    weights, bias = np.stack([w for w, _ in fitted], axis=1), np.array([b for _, b in fitted])
    card = RoutingCard(
        pools=list(pools),
        cost_per_item_usd=costs,
        margin=report.margin,
        target=target,
        category_key=category_key,
        tasks=sorted({o.keys.task for o in outcomes}),
        trained_on=len(outcomes),
        heldout={"method": f"{folds}-fold out of fold", **report.__dict__},
    )
    return RoutingModel(card, weights, bias, platt, idf)


def out_of_fold_logits(
    outcomes: Sequence[Outcome], x: csr_matrix, y: np.ndarray, seed: int, c: float, folds: int
) -> np.ndarray:
    fold = np.array([fold_of(o.text, seed, folds) for o in outcomes])
    logits = np.zeros(y.shape)
    for k in range(folds):
        train, held = fold != k, fold == k
        for p in range(y.shape[1]):
            w, b = _fit_pool(x[train], y[train, p], c)
            logits[held, p] = x[held] @ w + b
    return logits


def routed_figures(
    raw: np.ndarray,
    calibrated: np.ndarray,
    y: np.ndarray,
    costs: Sequence[float],
    pools: Sequence[str],
    margin: float,
) -> FitReport:
    """What routing with `margin` does on labelled items: measured and expected accuracy, shares, cost."""
    choices = choose(raw, margin)
    picked = y[np.arange(len(y)), choices]
    known = ~np.isnan(picked)
    chosen_p = calibrated[np.arange(len(y)), choices]
    shares = {p: float((choices == i).mean()) for i, p in enumerate(pools)}
    accuracy = {
        p: float(np.nanmean(y[:, i])) if (~np.isnan(y[:, i])).any() else float("nan")
        for i, p in enumerate(pools)
    }
    return FitReport(
        margin=float(margin),
        measured_accuracy=float(picked[known].mean()) if known.any() else float("nan"),
        expected_accuracy=float(chosen_p[known].mean()) if known.any() else float("nan"),
        pool_shares=shares,
        pool_accuracy=accuracy,
        cost_per_item_usd=float(np.asarray(costs)[choices].mean()),
    )


def choose_margin(
    raw: np.ndarray,
    calibrated: np.ndarray,
    y: np.ndarray,
    costs: Sequence[float],
    pools: Sequence[str],
    target: float,
) -> FitReport:
    """The largest margin whose measured accuracy meets the target; margin 0 (each item's likeliest pool) when
    no margin does."""
    gaps = np.unique(np.round(raw.max(axis=1, keepdims=True) - raw, 4))
    best = routed_figures(raw, calibrated, y, costs, pools, 0.0)
    for margin in gaps[gaps > 0]:
        figures = routed_figures(raw, calibrated, y, costs, pools, float(margin))
        if figures.measured_accuracy < target:
            break
        best = figures
    return best


EVAL_OUTCOMES = (
    "SELECT e.run, e.case_id, e.pool, e.correct, e.task_type, i.input_text, i.labels, i.tenant "
    "FROM (SELECT * FROM eval_results FINAL WHERE pool IN {pools:Array(String)}) AS e "
    "INNER JOIN (SELECT job_id, input_text, labels, tenant FROM job_inputs FINAL) AS i ON e.job_id = i.job_id"
)
# A cheaper pool's answer next to a stronger pool's answer to the same item, the stronger taken as right:
# shadow pairs (router.shadow_share: job X on the cheap pool, shadow:X on the strong one) and cascade
# escalations (attempt n escalated on the cheap pool, the final answer from the strong one).
AGREEMENT_OUTCOMES = (
    "SELECT c.job_id, c.output = s.output, c.task_type, i.input_text, i.labels, i.tenant "
    "FROM (SELECT job_id, output, task_type FROM results FINAL WHERE pool = {cheap:String} "
    "      AND status IN ('ok', 'escalated') AND NOT startsWith(job_id, 'shadow:')) AS c "
    "INNER JOIN (SELECT if(startsWith(job_id, 'shadow:'), substring(job_id, 8), job_id) AS original, output "
    "      FROM results FINAL WHERE pool = {strong:String} AND status = 'ok') AS s ON c.job_id = s.original "
    "INNER JOIN (SELECT job_id, input_text, labels, tenant FROM job_inputs FINAL) AS i ON c.job_id = i.job_id"
)


def outcomes_from_evals(
    store: ClickHouseStore, pools: Sequence[str], category_key: str = "category"
) -> list[Outcome]:
    """Eval cases run through several of `pools` (`modelyard eval`), with their inputs from job_inputs (stored
    for the task types in distill.capture_tasks). job_inputs keeps no metadata, so no category key here."""
    cases: dict[tuple[str, str], dict] = {}
    for run, case_id, pool, correct, task, text, labels, tenant in store.query(
        EVAL_OUTCOMES, {"pools": list(pools)}
    ):
        case = cases.setdefault(
            (run, case_id), {"text": text, "labels": labels, "task": task, "tenant": tenant, "right": {}}
        )
        case["right"][pool] = float(correct)
    return [_outcome(c, pools, category_key) for c in cases.values()]


def outcomes_from_agreement(
    store: ClickHouseStore, cheap: str, strong: str, category_key: str = "category"
) -> list[Outcome]:
    """Shadow pairs and cascade escalations: the cheap pool right when it agreed with the strong one."""
    rows = store.query(AGREEMENT_OUTCOMES, {"cheap": cheap, "strong": strong})
    cases = {
        job: {
            "text": text,
            "labels": labels,
            "task": task,
            "tenant": tenant,
            "right": {cheap: float(same), strong: 1.0},
        }
        for job, same, task, text, labels, tenant in rows
    }
    return [_outcome(c, [cheap, strong], category_key) for c in cases.values()]


def _outcome(case: dict, pools: Sequence[str], category_key: str) -> Outcome:
    keys = item_keys(
        case["task"], case["tenant"], list(case["labels"]) or None, {}, case["text"], category_key
    )
    return Outcome(case["text"], keys, tuple(case["right"].get(p, float("nan")) for p in pools))
