"""Routing quality on real recorded answers (RouteLLM's metrics) or a labelled dataset (the student's curve).

    .venv/bin/python benchmarks/routing_quality.py modelyard/data/datasets/routellm-mmlu-sample.jsonl
    .venv/bin/python benchmarks/routing_quality.py ../shared/datasets/routellm-mmlu-recorded.jsonl --splits 5
    .venv/bin/python benchmarks/routing_quality.py --train ours.jsonl --test theirs.jsonl --json
    .venv/bin/python benchmarks/routing_quality.py ../shared/datasets/banking77.jsonl

Recorded datasets ({prompt, category, scores} or the project's own recording shape with two models' scores):
routers are trained on one part and scored on another, never on what they were trained on. Without --train /
--test, the file is split by a seeded hash of the prompt (--test-share of it held out) --splits times with seeds
seed, seed+1, ...; each figure is reported as the mean and spread (standard deviation) over the splits. Routers:

* random: RouteLLM's random router (10 draws);
* category: each category's strong-minus-weak success rate on the training part (the per-subject baseline);
* learned: modelyard's learned router (streams/learned_routing.py), fitted as `modelyard routing fit` fits it,
  scored by P(strong right) - P(weak right); its operating point is the margin it calibrated on the training
  part for a target of weak + 80% of the strong-weak gap;
* oracle: the best any router could do with each share of strong calls.

APGR, CPT(50%) and CPT(80%) are computed as RouteLLM's evaluate.py computes them (modelyard/ops/routing_quality.py).
`strong_share` is the share of strong calls at the operating point (for the learned router, its own calibrated
margin, with the accuracy it measured on the held-out part; for the others, the share they need to reach the same
accuracy), and `cost_per_1000_usd` what 1,000 items cost there: prompt tokens counted with a real tokenizer, one
output token (the answer letter), priced from the project's price catalog. Ties in a router's scores are broken by
a seeded jitter far below any score difference (pandas' qcut, which RouteLLM uses, refuses duplicate edges).

`--train-shares 0.5,0.75,1` adds a learning curve: on each split, the category and learned routers are fitted on
those shares of the training part (a seeded subsample) and scored on the same test part (APGR, mean ± spread).

Labelled datasets ({text, label}): the embedding student's learning curve, from
modelyard/ops/student_quality.labelled_quality(train_rows, test_rows, seed).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.ops import student_quality
from modelyard.ops.routing_fit import Outcome, fit_router, outcomes_from_recordings
from modelyard.ops.routing_quality import (
    Curve,
    Summary,
    category_scores,
    oracle_curve,
    quality,
    random_curve,
    share_at,
    threshold_curve,
)
from schemas import Usage
from schemas.recording import Recording, parse_recording
from streams.learned_routing import ItemKeys, RoutingModel
from workers.pools.token_counts import TokenCounter
from workers.sink.pricing import PriceCatalog

ROUTERS = ("random", "category", "learned", "oracle")
GAP_SHARE = 0.8  # the operating point: weak accuracy + 80% of the gap to the strong model's
OUTPUT_TOKENS = 1


def read_rows(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def is_labelled(rows: list[dict]) -> bool:
    return bool(rows) and "text" in rows[0] and "label" in rows[0]


def held_out(key: str, seed: int, share: float) -> bool:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def split_rows(rows: list[dict], seed: int, share: float) -> tuple[list[dict], list[dict]]:
    key = "prompt" if "prompt" in rows[0] else "text" if "text" in rows[0] else "input"
    test = [held_out(str(r.get(key) or r.get("item")), seed, share) for r in rows]
    return [r for r, t in zip(rows, test, strict=True) if not t], [
        r for r, t in zip(rows, test, strict=True) if t
    ]


@dataclass(frozen=True)
class Pair:
    strong: str
    weak: str


def model_pair(recordings: list[Recording], strong: str | None, weak: str | None) -> Pair:
    """The two recorded models, the more accurate one strong (unless named)."""
    models = sorted({m for r in recordings for m in r.answers})
    if strong and weak:
        return Pair(strong, weak)
    if len(models) != 2:
        raise SystemExit(
            f"the recording has {len(models)} models {models}: name them with --strong and --weak"
        )
    rate = {m: np.mean([r.answers[m].right for r in recordings if m in r.answers]) for m in models}
    ranked = sorted(models, key=lambda m: rate[m])
    return Pair(ranked[1], ranked[0])


class CostModel:
    """USD per item per model: prompt tokens from a real tokenizer, OUTPUT_TOKENS out, catalog prices."""

    def __init__(self, catalog: PriceCatalog, counter: TokenCounter) -> None:
        self.catalog = catalog
        self.counter = counter
        self.at = datetime.now(UTC)

    def per_item(self, texts: list[str], model: str) -> np.ndarray:
        rates = self.catalog.rates(model, self.at)
        if rates is None:
            raise SystemExit(f"{model} has no price in the catalog (modelyard/data/prices/)")
        tokens = self.counter.count_many(texts)
        return np.array(
            [float(sum(rates.charge(Usage(input_tokens=n, output_tokens=OUTPUT_TOKENS)))) for n in tokens]
        )


def score_split(
    train: list[Recording], test: list[Recording], pair: Pair, costs: CostModel, seed: int
) -> dict[str, dict[str, float]]:
    models = {"weak": pair.weak, "strong": pair.strong}
    train_outcomes = outcomes_from_recordings(train, models)
    test_outcomes = outcomes_from_recordings(test, models)
    tr = np.array([o.right for o in train_outcomes])
    te = np.array([o.right for o in test_outcomes])
    weak, strong = te[:, 0], te[:, 1]
    texts = [o.text for o in test_outcomes]
    cost_weak, cost_strong = costs.per_item(texts, pair.weak), costs.per_item(texts, pair.strong)
    target = tr[:, 0].mean() + GAP_SHARE * (tr[:, 1].mean() - tr[:, 0].mean())
    jitter = np.random.default_rng(seed).random(len(te)) * 1e-9
    out: dict[str, dict[str, float]] = {}
    for name in ROUTERS:
        started = time.perf_counter()
        if name == "learned":
            out[name] = _learned(
                train_outcomes, test_outcomes, te, cost_weak, cost_strong, target, seed, jitter
            )
        else:
            curve = _curve(name, train, test, tr, te, seed, jitter)
            share = share_at(curve, target * 100) / 100
            out[name] = _figures(curve, strong, weak) | {
                "strong_share": share,
                "accuracy": target,
                "cost_per_1000_usd": 1000
                * float(share * cost_strong.mean() + (1 - share) * cost_weak.mean()),
            }
        out[name]["seconds"] = time.perf_counter() - started
    out["always weak"] = {
        "accuracy": float(weak.mean()),
        "strong_share": 0.0,
        "cost_per_1000_usd": 1000 * float(cost_weak.mean()),
    }
    out["always strong"] = {
        "accuracy": float(strong.mean()),
        "strong_share": 1.0,
        "cost_per_1000_usd": 1000 * float(cost_strong.mean()),
    }
    return out


def _curve(
    name: str,
    train: list[Recording],
    test: list[Recording],
    tr: np.ndarray,
    te: np.ndarray,
    seed: int,
    jitter: np.ndarray,
) -> Curve:
    weak, strong = te[:, 0], te[:, 1]
    if name == "random":
        return random_curve(strong, weak, seed)
    if name == "oracle":
        return oracle_curve(strong, weak)
    scores = category_scores([r.category for r in train], tr[:, 1], tr[:, 0], [r.category for r in test])
    return threshold_curve(scores + jitter, strong, weak)


def _learned(
    train: list[Outcome],
    test: list[Outcome],
    te: np.ndarray,
    cost_weak: np.ndarray,
    cost_strong: np.ndarray,
    target: float,
    seed: int,
    jitter: np.ndarray,
) -> dict[str, float]:
    model = fit_router(
        train, ["weak", "strong"], [float(cost_weak.mean()), float(cost_strong.mean())], target, seed=seed
    )
    texts, keys = [o.text for o in test], [o.keys for o in test]
    routed = model.route(texts, keys)
    strong_column = model.card.pools.index("strong")
    p, raw = routed.probabilities, routed.raw
    gain = raw[:, strong_column] - raw[:, 1 - strong_column]
    to_strong = routed.choices == strong_column
    figures = _figures(threshold_curve(gain + jitter, te[:, 1], te[:, 0]), te[:, 1], te[:, 0])
    chosen_p = p[np.arange(len(p)), routed.choices]
    return figures | {
        "strong_share": float(to_strong.mean()),
        "accuracy": float(np.where(to_strong, te[:, 1], te[:, 0]).mean()),
        "expected_accuracy": float(chosen_p.mean()),
        "cost_per_1000_usd": 1000 * float(np.where(to_strong, cost_strong, cost_weak).mean()),
        "margin": model.card.margin,
        "route_us_per_item": route_us_per_item(model, texts, keys),
    }


def route_us_per_item(
    model: RoutingModel, texts: list[str], keys: list[ItemKeys], batch: int = 5000
) -> float:
    """The learned step's CPU time an item (features, scores, choice) in the router's batches (router.batch_max
    5,000), best of 3, process time: the router's added cost on these texts."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for start in range(0, len(texts), batch):
            model.route(texts[start : start + batch], keys[start : start + batch])
        best = min(best, time.process_time() - started)
    return best / len(texts) * 1e6


def learning_curve(
    train: list[Recording], test: list[Recording], pair: Pair, shares: list[float], seed: int
) -> dict[str, dict[str, float]]:
    """APGR of the category and learned routers fitted on `shares` of the training part, scored on `test`."""
    models = {"weak": pair.weak, "strong": pair.strong}
    test_outcomes = outcomes_from_recordings(test, models)
    te = np.array([o.right for o in test_outcomes])
    jitter = np.random.default_rng(seed).random(len(te)) * 1e-9
    order = np.random.default_rng(seed).permutation(len(train))
    out: dict[str, dict[str, float]] = {}
    for share in shares:
        part = [train[i] for i in sorted(order[: max(1, round(share * len(train)))])]
        outcomes = outcomes_from_recordings(part, models)
        tr = np.array([o.right for o in outcomes])
        scores = category_scores([r.category for r in part], tr[:, 1], tr[:, 0], [r.category for r in test])
        model = fit_router(outcomes, ["weak", "strong"], [1.0, 2.0], None, seed=seed)
        raw = model.route([o.text for o in test_outcomes], [o.keys for o in test_outcomes]).raw
        gain = raw[:, model.card.pools.index("strong")] - raw[:, model.card.pools.index("weak")]
        out[f"{share:g}"] = {
            "train_items": float(len(part)),
            "category": _figures(threshold_curve(scores + jitter, te[:, 1], te[:, 0]), te[:, 1], te[:, 0])[
                "apgr"
            ],
            "learned": _figures(threshold_curve(gain + jitter, te[:, 1], te[:, 0]), te[:, 1], te[:, 0])[
                "apgr"
            ],
        }
    return out


def _figures(curve: Curve, strong: np.ndarray, weak: np.ndarray) -> dict[str, float]:
    q = quality(curve, strong.mean() * 100, weak.mean() * 100)
    return {"apgr": q.apgr, "cpt50": q.cpt50, "cpt80": q.cpt80}


def recorded(
    args: argparse.Namespace,
    train_rows: list[dict] | None,
    test_rows: list[dict] | None,
    rows: list[dict] | None,
) -> dict:
    from modelyard.core.settings import load_settings

    settings = load_settings()
    costs = CostModel(PriceCatalog.load(settings.costs.prices_dir), TokenCounter())
    splits = []
    if rows is not None:
        for k in range(args.splits):
            train, test = split_rows(rows, args.seed + k, args.test_share)
            splits.append((args.seed + k, train, test))
    else:
        splits.append((args.seed, train_rows, test_rows))
    runs, curves = [], []
    for seed, train, test in splits:
        train_recordings, test_recordings = (
            [parse_recording(r) for r in train],
            [parse_recording(r) for r in test],
        )
        pair = model_pair(train_recordings, args.strong, args.weak)
        runs.append(score_split(train_recordings, test_recordings, pair, costs, seed))
        if args.train_shares:
            curves.append(learning_curve(train_recordings, test_recordings, pair, args.train_shares, seed))
        print(
            f"split seed {seed}: {len(train)} train / {len(test)} test items, learned APGR {runs[-1]['learned']['apgr']:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "models": {"strong": pair.strong, "weak": pair.weak},
        "splits": len(runs),
        "train_items": len(splits[0][1]),
        "test_items": len(splits[0][2]),
        "routers": _summarise(runs),
    } | ({"learning_curve": _summarise(curves)} if curves else {})


def _summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for router in runs[0]:
        figures = {}
        for figure in runs[0][router]:
            summary = Summary.of([run[router][figure] for run in runs])
            figures[figure] = summary.mean
            figures[f"{figure}_spread"] = summary.spread
        out[router] = figures
    return out


def print_recorded(result: dict) -> None:
    print(
        f"strong {result['models']['strong']}, weak {result['models']['weak']}; {result['splits']} split(s), "
        f"{result['train_items']} train / {result['test_items']} test items (mean ± spread over splits)"
    )
    print(
        f"{'router':<14} {'APGR':>14} {'CPT(50%)':>16} {'CPT(80%)':>16} {'strong share':>14} {'accuracy':>9} {'USD/1k items':>13}"
    )
    for name, f in result["routers"].items():
        cells = [
            f"{f['apgr']:.3f} ± {f['apgr_spread']:.3f}" if "apgr" in f else "-",
            f"{f['cpt50']:.1f}% ± {f['cpt50_spread']:.1f}" if "cpt50" in f else "-",
            f"{f['cpt80']:.1f}% ± {f['cpt80_spread']:.1f}" if "cpt80" in f else "-",
        ]
        print(
            f"{name:<14} {cells[0]:>14} {cells[1]:>16} {cells[2]:>16} {f['strong_share'] * 100:>13.1f}% "
            f"{f['accuracy']:>9.3f} {f['cost_per_1000_usd']:>13.2f}"
        )
    print("RouteLLM's best published MMLU router (paper v4): APGR 0.603, CPT(50%) 35.4%, CPT(80%) 70.3%")
    learned = result["routers"].get("learned", {})
    if "route_us_per_item" in learned:
        print(
            f"learned router's cost: {learned['route_us_per_item']:.2f} ± {learned['route_us_per_item_spread']:.2f} "
            "CPU µs an item (features, scores, choice; batches of 5,000)"
        )
    if "learning_curve" in result:
        print(
            f"\nlearning curve: APGR on the same test parts, fitted on part of each training part\n"
            f"{'share':<8} {'train items':>11} {'category':>14} {'learned':>14}"
        )
        for share, f in result["learning_curve"].items():
            category = f"{f['category']:.3f} ± {f['category_spread']:.3f}"
            learned = f"{f['learned']:.3f} ± {f['learned_spread']:.3f}"
            print(f"{share:<8} {f['train_items']:>11.0f} {category:>14} {learned:>14}")


def labelled(args: argparse.Namespace, train_rows: list[dict], test_rows: list[dict]) -> tuple[object, dict]:
    return student_quality, student_quality.labelled_quality(train_rows, test_rows, args.seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", type=Path, help="one JSONL file, split by a seeded hash")
    parser.add_argument("--train", type=Path, help="train on this file (with --test: no split)")
    parser.add_argument("--test", type=Path, help="score on this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--splits", type=int, default=5, help="seeded splits of DATASET (recorded data; default 5)"
    )
    parser.add_argument(
        "--test-share",
        type=float,
        default=None,
        help="share of DATASET held out per split (default: 0.5 of a recording, 0.2 of a labelled dataset)",
    )
    parser.add_argument(
        "--strong", help="the strong model's name in the recording (default: the more accurate)"
    )
    parser.add_argument("--weak", help="the weak model's name in the recording")
    parser.add_argument(
        "--train-shares",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[],
        help="also fit on these shares of each training part (e.g. 0.5,0.75,1): a learning curve",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if (args.train is None) != (args.test is None) or (args.dataset is None) == (args.train is None):
        parser.error("give DATASET, or --train PATH and --test PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = read_rows(args.dataset) if args.dataset else None
    train_rows, test_rows = (read_rows(args.train), read_rows(args.test)) if args.train else (None, None)
    first = rows if rows is not None else train_rows
    if is_labelled(first or []):
        if rows is not None:
            share = 0.2 if args.test_share is None else args.test_share
            train_rows, test_rows = split_rows(rows, args.seed, share)
        module, result = labelled(args, train_rows, test_rows)  # type: ignore[arg-type]
        if not args.json and hasattr(module, "print_table"):
            module.print_table(result)  # the module's own table, when it has one
        else:
            print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
        return 0
    if args.test_share is None:
        args.test_share = 0.5
    result = recorded(args, train_rows, test_rows, rows)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        print_recorded(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
