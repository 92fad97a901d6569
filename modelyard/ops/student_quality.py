"""How a student does on a labelled dataset: the learning curve, coverage at a target accuracy, and what the
cascade (student first, unsure items to the frontier) costs and scores end to end against ground truth.

`labelled_quality(train_rows, test_rows, seed)` buys teacher labels on the train rows in rounds, as the cascade
does in production, two ways:

- `random`: every label on a random item (the frontier answering a random slice of the traffic);
- `active`: after a random first round, each round (a quarter more labels) labels the items the current
  student is least sure of (smallest margin between its two best labels: the items the cascade escalates,
  whose frontier answers `modelyard distill` learns from).

A fifth of every label count is spent on random items reserved up front (the shadow share of live traffic):
they calibrate and are never trained on or picked by active learning (random items drawn from what active
learning left over would be the easy ones, and a threshold fitted on them serves too much).

At each label count the student is trained on the other four fifths, its temperature and cascade threshold
are fitted on the calibration fifth, and it is scored on the test rows, which no step ever trains or tunes on:

- `accuracy`: the student alone, every item;
- `coverage_at_target`: the largest share of test items, most confident first, answered at `target`
  accuracy (the share a perfectly placed threshold would serve; the issue's figure);
- `served_share`, `served_accuracy`: what the threshold fitted on the calibration slice actually serves (the
  threshold reads the target `end_to_end` by default: the cascade's answers as a whole, escalated ones being
  the teacher's, are at the target; `served`: the student's own answers are; modelyard/ops/selective_serving.py);
- `end_to_end_accuracy`, `frontier_share`, `cost_ratio`: the cascade with that threshold and a teacher that
  answers the gold label (`teacher_accuracy`), its cost against sending every item to the frontier
  (prices from the bundled catalog: the frontier pool's model and the student's self-hosted rate);
- `expected_accuracy`: the mean calibrated confidence on the test rows (calibration holds when it is close to
  `accuracy`).

With `--seeds N` each seed draws its own 80/20 split (a seeded hash of the text; without --test) and its own
labels, and the figures of the served student's curve are summarised as mean and standard deviation.

    python -m modelyard.ops.student_quality DATA.jsonl [--test TEST.jsonl] [--seeds 3] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson

from modelyard.core._exceptions import InvalidInput
from modelyard.ops.selective_serving import cascade_threshold, coverage_at
from schemas import TaskType, Usage
from workers.pools.backends.distilled import estimated_tokens
from workers.pools.encoder import DEFAULT_ENCODER_DIR
from workers.pools.prompts import DEFAULT_INSTRUCTIONS
from workers.pools.student import StudentModel, features_for, label_text, softmax
from workers.sink.pricing import PriceCatalog

LABEL_COUNTS = (100, 300, 1000, 3000)
ROUND_GROWTH, MIN_ROUND = 0.25, 50  # an active round buys a quarter more labels (at least 50), then retrains
CALIBRATION_SHARE = 0.2  # of the random labels, held out for temperature and threshold
FRONTIER_MODEL = "claude-sonnet-5"
STUDENT_MODEL = "student"


@dataclass(frozen=True)
class CurvePoint:
    labels: int
    strategy: str
    kind: str
    accuracy: float
    expected_accuracy: float
    coverage_at_target: float
    threshold: float
    served_share: float
    served_accuracy: float
    end_to_end_accuracy: float
    frontier_share: float
    cost_ratio: float
    temperature: float
    calibration_items: int


def read_rows(path: Path) -> list[dict[str, str]]:
    """`{text, label}` JSONL (other fields are ignored); a line without both is an error naming it."""
    rows = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not JSON: {exc}", field="line") from exc
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("text"), str)
            or not isinstance(row.get("label"), str)
        ):
            raise InvalidInput(f"{path}:{number}: needs string fields text and label", field="text")
        rows.append({"text": row["text"], "label": row["label"]})
    return rows


def split_rows(
    rows: Sequence[dict[str, str]], test_share: float = 0.2, seed: int | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """80/20 by a hash of the text (seeded when `seed` is given): a repeated text is never on both sides."""
    held = [_hashed(r["text"], seed) < test_share for r in rows]
    return [r for r, h in zip(rows, held, strict=True) if not h], [
        r for r, h in zip(rows, held, strict=True) if h
    ]


def _hashed(text: str, seed: int | None = None) -> float:
    if seed is None:
        return zlib.crc32(text.encode()) % 10_000 / 10_000
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class _Costs:
    """USD per item: the frontier's classification prompt with the label list, and the student's."""

    def __init__(self, labels: Sequence[str]) -> None:
        catalog, now = PriceCatalog.load(), datetime.now(UTC)
        self.frontier = catalog.rates(FRONTIER_MODEL, now)
        self.student = catalog.rates(STUDENT_MODEL, now)
        self.prompt = DEFAULT_INSTRUCTIONS[TaskType.CLASSIFICATION].replace("{labels}", ", ".join(labels))

    def per_item(self, texts: Sequence[str], answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        frontier, student = [], []
        for text, answer in zip(texts, answers, strict=True):
            frontier.append(
                sum(
                    self.frontier.charge(
                        Usage(
                            input_tokens=estimated_tokens(self.prompt + "\n" + text),
                            output_tokens=estimated_tokens(answer),
                        )
                    )
                )
            )
            student.append(
                sum(
                    self.student.charge(
                        Usage(input_tokens=estimated_tokens(text), output_tokens=estimated_tokens(answer))
                    )
                )
            )
        return np.array(frontier, dtype=object), np.array(student, dtype=object)


class _Experiment:
    def __init__(
        self,
        train_rows: Sequence[dict[str, str]],
        test_rows: Sequence[dict[str, str]],
        kind: str,
        target: float,
        teacher_accuracy: float,
        encoder_dir: Path,
        reading: str = "end_to_end",
    ) -> None:
        texts = [r["text"] for r in train_rows] + [r["text"] for r in test_rows]
        self.labels = np.array([r["label"] for r in train_rows] + [r["label"] for r in test_rows])
        self.classes = sorted(set(self.labels))
        self.features = features_for(kind, encoder_dir)
        self.matrix = self.features.transform(texts + [label_text(c) for c in self.classes])
        self.names = np.arange(len(texts), len(texts) + len(self.classes))
        self.train = np.arange(len(train_rows))
        self.test = np.arange(len(train_rows), len(texts))
        self.hashes = np.array([_hashed("calibration:" + t) for t in texts])
        self.kind, self.target, self.teacher_accuracy = kind, target, teacher_accuracy
        self.reading = reading
        costs = _Costs(self.classes)
        self.frontier_cost, self.student_cost = costs.per_item(
            [texts[i] for i in self.test], list(self.labels[self.test])
        )

    def fit(self, rows: np.ndarray) -> StudentModel:
        names = self.names if self.kind == "embedding" else np.array([], dtype=int)
        idx = np.concatenate([rows, names])
        targets = np.concatenate(
            [self.labels[rows], np.array(self.classes)[names - self.names[0]] if len(names) else []]
        )
        return StudentModel.train_on(self.features, self.matrix[idx], list(targets))

    def margins(self, model: StudentModel, rows: np.ndarray) -> np.ndarray:
        top = np.sort(softmax(model.scores_from(self.matrix[rows])), axis=1)
        return top[:, -1] - (top[:, -2] if top.shape[1] > 1 else 0)

    def point(self, bought: np.ndarray, calibration: np.ndarray, strategy: str) -> CurvePoint:
        model = self.fit(bought)
        model = model.calibrated_on(self.matrix[calibration], list(self.labels[calibration]))
        threshold = cascade_threshold(*self._confident(model, calibration), self.target, self.reading)
        confidence, correct = self._confident(model, self.test)
        served = confidence >= threshold
        teacher_right = self._teacher(~served)
        final_correct = np.where(served, correct, teacher_right)
        cost = self.student_cost.sum() + self.frontier_cost[~served].sum()
        return CurvePoint(
            len(bought) + len(calibration),
            strategy,
            self.kind,
            _r(correct.mean()),
            _r(confidence.mean()),
            _r(coverage_at(confidence, correct, self.target)),
            _r(threshold),
            _r(served.mean()),
            _r(correct[served].mean() if served.any() else 1.0),
            _r(final_correct.mean()),
            _r((~served).mean()),
            _r(float(Decimal(cost) / Decimal(self.frontier_cost.sum()))),
            _r(model.temperature),
            len(calibration),
        )

    def _confident(self, model: StudentModel, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = model.probabilities_from(self.matrix[rows])
        best = probabilities.argmax(axis=1)
        return probabilities[np.arange(len(rows)), best], np.array(model.classes)[best] == self.labels[rows]

    def _teacher(self, asked: np.ndarray) -> np.ndarray:
        """The teacher answers the gold label with `teacher_accuracy`, chosen by a hash of the row."""
        draws = np.array([zlib.crc32(f"teacher:{i}".encode()) % 10_000 / 10_000 for i in self.test])
        return draws < self.teacher_accuracy

    def curve(self, seed: int, label_counts: Sequence[int], active: bool) -> list[CurvePoint]:
        """A fifth of each label count calibrates: random items reserved up front from the whole train side
        (the shadow share of live traffic), never trained on and never picked by active learning."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(self.train)
        reserve = order[: round(CALIBRATION_SHARE * min(max(label_counts), len(order)))]
        pool = np.setdiff1d(self.train, reserve)
        bought = rng.permutation(pool)[: max(1, round((1 - CALIBRATION_SHARE) * label_counts[0]))]
        points = []
        for count in label_counts:
            count = min(count, len(self.train))
            calibration = reserve[: round(CALIBRATION_SHARE * count)]
            while len(bought) < count - len(calibration):
                step = min(
                    count - len(calibration) - len(bought), max(MIN_ROUND, int(len(bought) * ROUND_GROWTH))
                )
                bought = self._buy(rng, pool, bought, step, active)
            points.append(self.point(bought, calibration, "active" if active else "random"))
        return points

    def _buy(
        self, rng: np.random.Generator, pool: np.ndarray, bought: np.ndarray, step: int, active: bool
    ) -> np.ndarray:
        """Random items, or the current student's least sure ones (smallest margin: what the cascade escalates)."""
        unlabelled = np.setdiff1d(pool, bought)
        if not active:
            return np.concatenate([bought, rng.choice(unlabelled, step, replace=False)])
        hard = unlabelled[np.argsort(self.margins(self.fit(bought), unlabelled))[:step]]
        return np.concatenate([bought, hard])


def _r(value: float) -> float:
    return round(float(value), 4)


def labelled_quality(
    train_rows: Sequence[dict[str, str]],
    test_rows: Sequence[dict[str, str]],
    seed: int,
    label_counts: Sequence[int] = LABEL_COUNTS,
    target: float = 0.95,
    teacher_accuracy: float = 1.0,
    kinds: Sequence[str] = ("embedding", "ngram"),
    encoder_dir: Path = DEFAULT_ENCODER_DIR,
    reading: str = "end_to_end",
) -> dict[str, object]:
    """Per label count: the served student (the active-learning embedding student where an encoder is given)
    with `accuracy`, `coverage_at_target`, `end_to_end_accuracy`, `frontier_share`, `cost_ratio`; and
    under `curves` every strategy and kind measured, for the with/without active learning table."""
    if not train_rows or not test_rows:
        raise InvalidInput("labelled_quality needs train and test rows", field="rows")
    curves: dict[str, list[CurvePoint]] = {}
    for kind in kinds:
        experiment = _Experiment(train_rows, test_rows, kind, target, teacher_accuracy, encoder_dir, reading)
        for active in (False, True):
            curves[f"{kind}/{'active' if active else 'random'}"] = experiment.curve(
                seed, label_counts, active
            )
    chosen = _best_curve(curves)
    per_count = {str(p.labels): {k: v for k, v in asdict(p).items() if k != "labels"} for p in curves[chosen]}
    return {
        "seed": seed,
        "target": target,
        "target_reading": reading,
        "teacher_accuracy": teacher_accuracy,
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "student": chosen,
        "label_counts": per_count,
        "curves": {name: [asdict(p) for p in points] for name, points in curves.items()},
    }


def _best_curve(curves: dict[str, list[CurvePoint]]) -> str:
    """The curve that serves most at the largest label count (ties: the cheaper n-gram kind)."""
    return max(
        curves,
        key=lambda name: (
            curves[name][-1].served_share,
            curves[name][-1].end_to_end_accuracy,
            "ngram" in name,
        ),
    )


def _rows_table(result: dict[str, object]) -> str:
    lines = [
        f"{'student':<20} {'labels':>6} {'accuracy':>8} {'expected':>8} {'cov@target':>10} {'served':>7} "
        f"{'served acc':>10} {'e2e acc':>8} {'frontier':>8} {'cost ratio':>10}"
    ]
    for name, points in result["curves"].items():  # type: ignore[union-attr]
        for p in points:
            lines.append(
                f"{name:<20} {p['labels']:>6} {p['accuracy']:>8.3f} {p['expected_accuracy']:>8.3f} "
                f"{p['coverage_at_target']:>10.3f} {p['served_share']:>7.3f} {p['served_accuracy']:>10.3f} "
                f"{p['end_to_end_accuracy']:>8.3f} {p['frontier_share']:>8.3f} {p['cost_ratio']:>10.4f}"
            )
    return "\n".join(lines)


def print_table(result: dict[str, object]) -> None:
    """The learning-curve table (benchmarks/routing_quality.py prints a labelled dataset's result with it)."""
    print(f"seed {result['seed']}, target {result['target']}, served student: {result['student']}")
    print(_rows_table(result))


SUMMARY_FIGURES = (
    "accuracy",
    "coverage_at_target",
    "served_share",
    "served_accuracy",
    "end_to_end_accuracy",
    "frontier_share",
    "cost_ratio",
)


def summarise(results: Sequence[dict[str, object]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per curve and label count, each figure's [mean, standard deviation] over the results (seeds)."""
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in results[0]["curves"]:  # type: ignore[attr-defined]
        points = [r["curves"][name] for r in results]  # type: ignore[index]
        summary[name] = {
            str(at[0]["labels"]): {
                figure: [_r(np.mean([p[figure] for p in at])), _r(np.std([p[figure] for p in at]))]
                for figure in SUMMARY_FIGURES
            }
            for at in zip(*points, strict=True)
        }
    return summary


def print_summary(summary: dict[str, dict[str, dict[str, list[float]]]], seeds: int) -> None:
    print(f"mean ± sd over {seeds} seeds (split and labels drawn per seed)")
    print(f"{'student':<20} {'labels':>6} " + " ".join(f"{f[:14]:>15}" for f in SUMMARY_FIGURES))
    for name, counts in summary.items():
        for count, figures in counts.items():
            cells = " ".join(f"{m:>8.3f} ±{sd:5.3f}" for m, sd in figures.values())
            print(f"{name:<20} {count:>6} {cells}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="labelled JSONL: {text, label} a line")
    parser.add_argument("--test", type=Path, help="score on this file (default: a hash 80/20 split of DATA)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument(
        "--labels", default=",".join(map(str, LABEL_COUNTS)), help="label counts, comma-separated"
    )
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--kinds", default="embedding,ngram")
    parser.add_argument("--reading", choices=("end_to_end", "served"), default="end_to_end")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = read_rows(args.data)
    counts, kinds = tuple(int(c) for c in args.labels.split(",")), tuple(args.kinds.split(","))
    results = []
    for seed in range(args.seeds):
        train, test = (rows, read_rows(args.test)) if args.test else split_rows(rows, seed=seed)
        result = labelled_quality(train, test, seed, counts, args.target, kinds=kinds, reading=args.reading)
        results.append(result)
        if not args.json:
            print_table(result)
    summary = summarise(results)
    if args.json:
        print(orjson.dumps({"runs": results, "summary": summary}).decode())
    else:
        print_summary(summary, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
