"""`modelyard distill --task T`: train the CPU student on the frontier's answers, check it on a held-out slice,
and, when it agrees with the frontier often enough, register it and propose routing the task to it.

Labelled data is every `ok` answer of a teacher pool (`distill.teacher_pools`) to an item whose input the sink
kept (`job_inputs`, task types in `distill.capture_tasks`): routed jobs, cascade escalations, shadow samples
and eval cases alike. The held-out slice is chosen by a hash of the input text, so the same text never sits
on both sides (the bundled tickets repeat phrasings) and a rerun on the same data holds out the same slice.
"""

from __future__ import annotations

import difflib
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelyard.core._exceptions import InvalidInput
from modelyard.core.settings import CascadeSettings, DistillSettings, PoolSettings, Settings
from modelyard.ops.selective_serving import cascade_threshold
from schemas import TaskType
from streams.rules import Condition, PolicyFile, Rule, configured_policy
from workers.pools.model_registry import ModelRegistry, Registration
from workers.pools.student import StudentModel
from workers.sink.clickhouse import REGISTRY_COLUMNS, ClickHouseStore

EXAMPLES_SQL = """
SELECT job_id, any(input_text), any(labels), argMax(label, attempt)
FROM v_training_examples
WHERE task_type = {task:String} AND pool IN {pools:Array(String)} AND label != ''
GROUP BY job_id ORDER BY job_id
"""


@dataclass(frozen=True)
class Example:
    job_id: str
    text: str
    labels: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class DistillOutcome:
    task: str
    examples: int
    train: int
    heldout: int
    agreement: float
    majority_agreement: float
    target: float
    registration: Registration | None
    reason: str
    kind: str = "ngram"
    threshold: float | None = None  # the calibrated cascade threshold at the target (None: not computed)
    served_share: float = 0.0  # held-out share at or above it
    served_agreement: float = 0.0

    @property
    def registered(self) -> bool:
        return self.registration is not None


@dataclass(frozen=True)
class Candidate:
    """One kind of student trained on the training slice, calibrated and judged on the held-out slice."""

    model: StudentModel
    agreement: float
    threshold: float
    served_share: float
    served_agreement: float


def train_candidate(
    kind: str,
    train: list[Example],
    heldout: list[Example],
    target: float,
    config: DistillSettings,
) -> Candidate:
    """Temperature and cascade threshold are fitted on the held-out answers (one parameter each)."""
    model = StudentModel.train([e.text for e in train], [e.label for e in train], kind, config.encoder_dir)
    model = model.calibrated([e.text for e in heldout], [e.label for e in heldout])
    predictions = model.predict([e.text for e in heldout], [e.labels for e in heldout])
    confidence = np.array([p.confidence if p else 0.0 for p in predictions])
    correct = np.array(
        [p is not None and p.label == e.label for p, e in zip(predictions, heldout, strict=True)]
    )
    threshold = cascade_threshold(confidence, correct, target, config.target_reading)
    served = confidence >= threshold
    served_agreement = float(correct[served].mean()) if served.any() else 0.0
    return Candidate(model, float(correct.mean()), threshold, float(served.mean()), served_agreement)


def student_kinds(choice: str, encoder_dir: Path) -> list[str]:
    """`auto`: the n-gram student, and the embedding student too where the encoder is exported."""
    if choice != "auto":
        return [choice]
    return ["ngram", "embedding"] if (encoder_dir / "encoder.json").exists() else ["ngram"]


def load_examples(store: ClickHouseStore, task: str, teacher_pools: list[str]) -> list[Example]:
    rows = store.query(EXAMPLES_SQL, {"task": task, "pools": teacher_pools})
    return [Example(job_id, text, tuple(labels), label) for job_id, text, labels, label in rows]


def is_heldout(text: str, share: float) -> bool:
    return zlib.crc32(text.encode()) % 10_000 < share * 10_000


def split(examples: list[Example], holdout: float) -> tuple[list[Example], list[Example]]:
    train = [e for e in examples if not is_heldout(e.text, holdout)]
    return train, [e for e in examples if is_heldout(e.text, holdout)]


def evaluate(model: StudentModel, examples: list[Example]) -> float:
    return model.agreement(
        [e.text for e in examples], [e.labels for e in examples], [e.label for e in examples]
    )


def majority_agreement(train: list[Example], heldout: list[Example]) -> float:
    """What answering the most common training label of each label set would score (the floor to beat)."""
    common: dict[tuple[str, ...], Counter[str]] = {}
    for e in train:
        common.setdefault(e.labels, Counter())[e.label] += 1
    hits = sum(
        bool(common.get(e.labels)) and common[e.labels].most_common(1)[0][0] == e.label for e in heldout
    )
    return hits / len(heldout) if heldout else 0.0


class Distiller:
    def __init__(self, config: DistillSettings, registry: ModelRegistry, store: ClickHouseStore) -> None:
        self.config = config
        self.store = store
        self.registry = registry

    def run(self, task: TaskType, target: float, holdout: float) -> DistillOutcome:
        examples = load_examples(self.store, task.value, self.config.teacher_pools)
        train, heldout = split(examples, holdout)
        minimum = self.config.min_examples
        if len(train) < minimum or not heldout or len({e.label for e in train}) < 2:
            why = (
                f"only {len(train)} training and {len(heldout)} held-out examples with 2+ labels "
                f"(need {minimum}+ to train); send more {task.value} work to {self.config.teacher_pools}"
            )
            return DistillOutcome(
                task.value, len(examples), len(train), len(heldout), 0.0, 0.0, target, None, why
            )
        config = self.config
        candidates = {
            kind: train_candidate(kind, train, heldout, target, config)
            for kind in student_kinds(config.student, config.encoder_dir)
        }
        kind = max(candidates, key=lambda k: (candidates[k].served_share, candidates[k].agreement))
        best, floor = candidates[kind], majority_agreement(train, heldout)
        facts = (task.value, len(examples), len(train), len(heldout), best.agreement, floor, target)
        serving = (kind, best.threshold, best.served_share, best.served_agreement)
        if best.agreement < target and best.served_share < config.min_served_share:
            why = (
                f"held-out agreement {best.agreement:.3f} < target {target} and the calibrated cascade would serve "
                f"{best.served_share:.0%} of items at it (< {config.min_served_share:.0%}): not registered; collect "
                f"more frontier answers for {task.value} (now {len(examples)}) and run distill again"
            )
            return DistillOutcome(*facts, None, why, *serving)
        registration = self.register(best, task.value, len(train), len(heldout), target)
        why = (
            f"{kind} student, held-out agreement {best.agreement:.3f}; answers at confidence >= {best.threshold:.3f} "
            f"({best.served_share:.0%} of items) agree {best.served_agreement:.3f} (target {target}): "
            f"registered {registration.version}"
        )
        return DistillOutcome(*facts, registration, why, *serving)

    def register(self, best: Candidate, task: str, train: int, heldout: int, target: float) -> Registration:
        serving = {
            "threshold": best.threshold,
            "served_share": best.served_share,
            "served_agreement": best.served_agreement,
        }
        registration = self.registry.register(
            best.model, task, train, heldout, best.agreement, target, datetime.now(UTC), serving
        )
        r = registration
        row = (
            r.task,
            r.version,
            r.trained_on,
            r.heldout_examples,
            r.heldout_agreement,
            r.target,
            r.registered_at,
            r.path,
        )
        self.store.insert("model_registry", [row], REGISTRY_COLUMNS)
        return registration


def propose_policy(
    current: PolicyFile, task: TaskType, pool: str, cascade: CascadeSettings | None = None
) -> PolicyFile:
    """`current` with a rule sending `task` to `pool`, placed before the first rule that names the task
    (rules about priority or deadlines that come earlier keep their say); an older such rule is replaced.
    With `cascade`, the pool's section of `cascades` is set to it (the pool applies it from this file)."""
    name = f"distilled-{task.value}"
    rules = [r for r in current.rules if r.name != name]
    position = next((i for i, r in enumerate(rules) if r.when.task and task in r.when.task), len(rules))
    rules.insert(position, Rule(name=name, when=Condition(task=[task]), pool=pool))
    cascades = {**current.cascades, pool: cascade} if cascade else current.cascades
    return current.model_copy(update={"rules": rules, "cascades": cascades})


def calibrated_cascade(
    settings: Settings, current: PolicyFile, task: TaskType, pool: str, threshold: float | None
) -> CascadeSettings | None:
    """The pool's cascade (from the policy file, else its settings) with `task`'s threshold replaced by the
    calibrated one; answers below it go to the cascade's pool, or the first teacher pool."""
    if threshold is None:
        return None
    base = current.cascades.get(pool) or settings.pools[pool].cascade
    to_pool = base.to_pool if base else settings.distill.teacher_pools[0]
    thresholds = {**(base.min_confidence if base else {}), task: min(threshold, 1.0)}
    return CascadeSettings(to_pool=to_pool, min_confidence=thresholds)


def policy_text(policy: PolicyFile) -> str:
    return yaml.safe_dump(policy.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def policy_diff(current: PolicyFile, proposed: PolicyFile, where: str) -> str:
    lines = difflib.unified_diff(
        policy_text(current).splitlines(keepends=True),
        policy_text(proposed).splitlines(keepends=True),
        fromfile=f"current ({where})",
        tofile="proposed",
    )
    return "".join(lines)


def cascade_note(
    pool: str,
    config: PoolSettings,
    provider_api: str,
    task: TaskType,
    applied: tuple[CascadeSettings | None, DistillOutcome],
) -> str:
    """What the proposal applies: the calibrated cascade threshold, and whether the pool serves the student."""
    cascade, outcome = applied
    notes = []
    if provider_api != "distilled":
        notes.append(
            f"pool {pool} calls {config.provider}, not the student: set MODELYARD_POOLS__{pool.upper()}__PROVIDER=distilled"
        )
    if cascade is None:
        notes.append(f"pool {pool} has no calibrated cascade for {task.value}")
    else:
        notes.append(
            f"cascade (cascades.{pool}): answers below confidence {cascade.min_confidence[task]:.3f} go on to "
            f"{cascade.to_pool}; held out, {outcome.served_share:.0%} are served at agreement {outcome.served_agreement:.3f}"
        )
    return "; ".join(notes)


def write_proposal(
    settings: Settings, task: TaskType, pool: str, out: Path, outcome: DistillOutcome
) -> tuple[str, PolicyFile]:
    """Writes the policy in force (file or routes) plus a rule sending `task` to `pool`; returns the diff.
    Takes the whole settings: the policy in force, the pools and their providers all count."""
    if pool not in settings.pools:
        raise InvalidInput(
            f"--pool: unknown pool {pool!r}; configured: {sorted(settings.pools)}", field="pool"
        )
    router = settings.router
    current = configured_policy(
        set(settings.pools), settings.routes, settings.default_pool, router.policy_file
    )
    config = settings.pools[pool]
    cascade = calibrated_cascade(settings, current, task, pool, outcome.threshold)
    proposed = propose_policy(current, task, pool, cascade)
    api = settings.providers[config.provider].api
    header = (
        f"# Proposed by `modelyard distill --task {task.value}`: student {outcome.registration.version if outcome.registration else '-'} "
        f"agrees with the frontier on {outcome.agreement:.3f} of {outcome.heldout} held-out items (target {outcome.target}).\n"
        f"# {cascade_note(pool, config, api, task, (cascade, outcome))}\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + policy_text(proposed))
    where = str(router.policy_file) if router.policy_file else "routes settings"
    return policy_diff(current, proposed, where), proposed


def outcome_table(outcome: DistillOutcome) -> Any:
    """The distillation decision as a rich table (CLI and demo)."""
    from rich.table import Table

    table = Table(
        "task",
        "examples",
        "train",
        "held out",
        "agreement",
        "majority label",
        "student",
        "threshold",
        "served",
        "served agreement",
        "target",
        "decision",
        title="distillation: student vs frontier answers on the held-out slice",
    )
    decision = f"register {outcome.registration.version}" if outcome.registered else "keep the frontier"
    table.add_row(
        outcome.task,
        f"{outcome.examples:,}",
        f"{outcome.train:,}",
        f"{outcome.heldout:,}",
        f"{outcome.agreement:.3f}",
        f"{outcome.majority_agreement:.3f}",
        outcome.kind,
        "-" if outcome.threshold is None else f"{outcome.threshold:.3f}",
        f"{outcome.served_share:.1%}",
        f"{outcome.served_agreement:.3f}",
        f"{outcome.target:g}",
        decision,
    )
    return table
