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

import yaml

from modelyard.core._exceptions import InvalidInput
from modelyard.core.settings import Settings
from schemas import TaskType
from streams.rules import Condition, PolicyFile, Rule, load_policy_file, policy_from_routes
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

    @property
    def registered(self) -> bool:
        return self.registration is not None


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
    def __init__(self, settings: Settings, store: ClickHouseStore) -> None:
        self.settings = settings
        self.store = store
        self.registry = ModelRegistry(settings.models_dir)

    def run(self, task: TaskType, target: float, holdout: float) -> DistillOutcome:
        examples = load_examples(self.store, task.value, self.settings.distill.teacher_pools)
        train, heldout = split(examples, holdout)
        minimum = self.settings.distill.min_examples
        if len(train) < minimum or not heldout or len({e.label for e in train}) < 2:
            why = (
                f"only {len(train)} training and {len(heldout)} held-out examples with 2+ labels "
                f"(need {minimum}+ to train); send more {task.value} work to {self.settings.distill.teacher_pools}"
            )
            return DistillOutcome(
                task.value, len(examples), len(train), len(heldout), 0.0, 0.0, target, None, why
            )
        model = StudentModel.train([e.text for e in train], [e.label for e in train])
        agreement, floor = evaluate(model, heldout), majority_agreement(train, heldout)
        if agreement < target:
            why = (
                f"held-out agreement {agreement:.3f} < target {target}: not registered; collect more frontier "
                f"answers for {task.value} (now {len(examples)}) and run distill again"
            )
            return DistillOutcome(
                task.value, len(examples), len(train), len(heldout), agreement, floor, target, None, why
            )
        registration = self.register(model, task.value, len(train), len(heldout), agreement, target)
        why = f"held-out agreement {agreement:.3f} >= target {target}: registered {registration.version}"
        return DistillOutcome(
            task.value, len(examples), len(train), len(heldout), agreement, floor, target, registration, why
        )

    def register(
        self, model: StudentModel, task: str, train: int, heldout: int, agreement: float, target: float
    ) -> Registration:
        registration = self.registry.register(
            model, task, train, heldout, agreement, target, datetime.now(UTC)
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


def current_policy(settings: Settings) -> PolicyFile:
    pools = set(settings.pools)
    if settings.router.policy_file:
        return load_policy_file(settings.router.policy_file, pools)
    return policy_from_routes(settings.routes, settings.default_pool, pools)


def propose_policy(current: PolicyFile, task: TaskType, pool: str) -> PolicyFile:
    """`current` with a rule sending `task` to `pool`, placed before the first rule that names the task
    (rules about priority or deadlines that come earlier keep their say); an older such rule is replaced."""
    name = f"distilled-{task.value}"
    rules = [r for r in current.rules if r.name != name]
    position = next((i for i, r in enumerate(rules) if r.when.task and task in r.when.task), len(rules))
    rules.insert(position, Rule(name=name, when=Condition(task=[task]), pool=pool))
    return current.model_copy(update={"rules": rules})


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


def cascade_note(settings: Settings, task: TaskType, pool: str) -> str:
    """What the proposal keeps: the pool's cascade threshold, and whether the pool serves the student."""
    config = settings.pools[pool]
    notes = []
    if settings.providers[config.provider].api != "distilled":
        notes.append(
            f"pool {pool} calls {config.provider}, not the student: set MODELYARD_POOLS__{pool.upper()}__PROVIDER=distilled"
        )
    threshold = config.cascade.min_confidence.get(task) if config.cascade else None
    if threshold is None:
        notes.append(f"pool {pool} has no cascade for {task.value}: every student answer is final")
    else:
        notes.append(f"cascade kept: answers below confidence {threshold} go on to {config.cascade.to_pool}")  # type: ignore[union-attr]
    return "; ".join(notes)


def write_proposal(
    settings: Settings, task: TaskType, pool: str, out: Path, outcome: DistillOutcome
) -> tuple[str, PolicyFile]:
    if pool not in settings.pools:
        raise InvalidInput(
            f"--pool: unknown pool {pool!r}; configured: {sorted(settings.pools)}", field="pool"
        )
    current = current_policy(settings)
    proposed = propose_policy(current, task, pool)
    header = (
        f"# Proposed by `modelyard distill --task {task.value}`: student {outcome.registration.version if outcome.registration else '-'} "
        f"agrees with the frontier on {outcome.agreement:.3f} of {outcome.heldout} held-out items (target {outcome.target}).\n"
        f"# {cascade_note(settings, task, pool)}\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + policy_text(proposed))
    where = str(settings.router.policy_file) if settings.router.policy_file else "routes settings"
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
        f"{outcome.target:g}",
        decision,
    )
    return table
