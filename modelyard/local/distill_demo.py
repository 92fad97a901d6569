"""`modelyard demo --distill`: the distillation loop on bundled tickets, end to end through the real pipeline.

1. before: a policy file routes classification to the frontier; the first 2,000 lines of
   `modelyard/data/distill_jobs.jsonl` (support tickets and reviews) go through router, pools and sink;
2. distill: the student is trained on what the sink stored (`modelyard distill --task classification`);
3. after: the proposed policy is copied over the policy file (the router reloads it), the SLM pool serves the
   student (provider `distilled`; answers below confidence 0.6 cascade to the frontier) and the other 1,000
   lines run. Every SLM-bound item is also shadowed to the frontier (`router.shadow_share` 1.0) so agreement is
   measured on all of them; those calls are measurement, billed to tenant `shadow` and shown apart;
4. per phase, from ClickHouse: jobs, the share the frontier answered, cost, and agreement with the teacher.

`--dataset PATH` runs the same loop on a labelled JSONL ({text, label}; e.g. the bundled
`modelyard/data/labelled/banking77.jsonl`, 77 intents): its rows in the order of a hash of the text, the first
3,000 to the frontier, the next 2,000 after distillation, every item asked with the dataset's whole label set.
The simulated frontier answers each text's own label (`simulator.gold_labels`: a teacher that answers the
ground truth), and each phase also shows accuracy against that ground truth. With the encoder exported
(`make encoder`), distill trains the embedding student as well and keeps the one that serves more.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from modelyard.core._exceptions import ProcessError
from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics, group_lag
from modelyard.local.demo import STALL_TIMEOUT_S, Demo
from modelyard.local.processes import ProcessSupervisor
from modelyard.ops.distill import Distiller, outcome_table, policy_text, write_proposal
from modelyard.ops.student_quality import read_rows
from modelyard.ops.submit import print_summary
from schemas import TaskType
from streams.rules import policy_from_routes
from workers.pools.model_registry import ModelRegistry
from workers.sink.clickhouse import ClickHouseStore

BEFORE_LINES = 2000
DATASET_BEFORE, DATASET_AFTER = 3000, 2000
FINALS_SQL = """
SELECT job_id, argMax(output, attempt) FROM results FINAL WHERE startsWith(job_id, {prefix:String}) GROUP BY job_id
"""
CASCADE = {"to_pool": "frontier", "min_confidence": {"classification": 0.6}}
PHASE_SQL = """
WITH finals AS (
    SELECT job_id, argMax(pool, attempt) AS pool, argMax(output, attempt) AS output
    FROM results FINAL WHERE startsWith(job_id, {prefix:String}) GROUP BY job_id
), teacher AS (
    SELECT substring(job_id, 8) AS original_job_id, output FROM results FINAL
    WHERE startsWith(job_id, concat('shadow:', {prefix:String})) AND status = 'ok'
)
SELECT count(), countIf(f.pool IN {teachers:Array(String)}),
       countIf(f.pool IN {teachers:Array(String)} OR t.original_job_id != ''),
       countIf(f.pool IN {teachers:Array(String)} OR (t.original_job_id != '' AND t.output = f.output))
FROM finals AS f LEFT JOIN teacher AS t ON f.job_id = t.original_job_id
"""
COST_SQL = """
SELECT sumIf(total_cost_usd, startsWith(job_id, {prefix:String})),
       sumIf(total_cost_usd, startsWith(job_id, concat('shadow:', {prefix:String}))),
       countIf(startsWith(job_id, {prefix:String}) AND pool IN {teachers:Array(String)})
FROM cost_ledger FINAL
WHERE startsWith(job_id, {prefix:String}) OR startsWith(job_id, concat('shadow:', {prefix:String}))
"""


@dataclass(frozen=True)
class PhaseNumbers:
    name: str
    jobs: int
    frontier_jobs: int
    frontier_calls: int
    cost_usd: float
    shadow_cost_usd: float
    measured: int
    agreeing: int
    truth_measured: int = 0  # jobs with a ground-truth label (--dataset)
    truth_correct: int = 0

    @property
    def frontier_share(self) -> float:
        return self.frontier_jobs / self.jobs if self.jobs else 0.0

    @property
    def agreement(self) -> float:
        return self.agreeing / self.measured if self.measured else 0.0

    @property
    def accuracy(self) -> str:
        return f"{self.truth_correct / self.truth_measured:.3f}" if self.truth_measured else "-"


def demo_overrides(state_dir: Path, dataset: Path | None = None) -> dict[str, dict[str, object]]:
    """What the demo changes: its own policy file, shadows for every SLM item, the student in the SLM pool,
    and with a dataset, a simulated frontier that answers its ground truth."""
    overrides: dict[str, dict[str, object]] = {
        "router": {"policy_file": str(state_dir / "distill-demo-policy.yaml"), "shadow_share": 1.0},
        "pools": {"slm": {"provider": "distilled", "model": "student", "cascade": CASCADE}},
        "distill": {"reload_interval_s": 1.0},
    }
    if dataset is not None:
        overrides["simulator"] = {"gold_labels": str(dataset.resolve())}
    return overrides


def environment(overrides: dict[str, dict[str, object]]) -> dict[str, str]:
    """The same overrides as MODELYARD_* variables, for the demo's child processes."""
    env = {}
    for section, values in overrides.items():
        for name, value in values.items():
            if section == "pools":
                for field, setting in value.items():  # type: ignore[attr-defined]
                    text = json.dumps(setting) if isinstance(setting, dict) else str(setting)
                    env[f"MODELYARD_POOLS__{name.upper()}__{field.upper()}"] = text
            else:
                env[f"MODELYARD_{section.upper()}__{name.upper()}"] = str(value)
    return env


def dataset_lines(run: str) -> list[tuple[int, bytes]]:
    raw = resources.files("modelyard").joinpath("data/distill_jobs.jsonl").read_bytes().splitlines()
    lines = []
    for number, line in enumerate(raw, start=1):
        item = orjson.loads(line)
        phase = "b" if number <= BEFORE_LINES else "a"
        item["job_id"] = f"{run}-{phase}-{item['job_id']}"
        lines.append((number, orjson.dumps(item)))
    return lines


def labelled_lines(path: Path, run: str) -> tuple[list[tuple[int, bytes]], dict[str, str]]:
    """Work items from a labelled JSONL (before + after phases) and each job's ground-truth label."""
    rows = sorted(read_rows(path), key=lambda r: zlib.crc32(r["text"].encode()))[
        : DATASET_BEFORE + DATASET_AFTER
    ]
    labels = sorted({r["label"] for r in rows})
    lines, truth = [], {}
    for number, row in enumerate(rows, start=1):
        job_id = f"{run}-{'b' if number <= DATASET_BEFORE else 'a'}-{number:05d}"
        item = {"job_id": job_id, "tenant": "acme", "task": "classification", "input": row["text"]}
        lines.append((number, orjson.dumps({**item, "params": {"labels": labels}})))
        truth[job_id] = row["label"]
    return lines, truth


class DistillDemo(Demo):
    def __init__(self, settings: Settings, console: Console, dataset: Path | None = None) -> None:
        overrides = demo_overrides(settings.state_dir, dataset)
        self.dataset = dataset
        super().__init__(load_settings(**overrides), console)
        self.policy_file = settings.state_dir / "distill-demo-policy.yaml"
        self.run_id = "distill-" + self.run_id.removeprefix("demo-")
        self.supervisor = ProcessSupervisor(self.settings.logs_dir, env=environment(overrides))

    def run(self) -> int:  # type: ignore[override]
        started_broker = False
        try:
            with self.console.status("starting Kafka (KRaft, local)..."):
                started_broker = self.broker.start()
            self._write_before_policy()
            return asyncio.run(self._loop())
        finally:
            self.supervisor.stop_all()
            if started_broker:
                with self.console.status("stopping Kafka..."):
                    self.broker.stop()

    def _write_before_policy(self) -> None:
        routes = {**self.settings.routes, TaskType.CLASSIFICATION: "frontier"}
        before = policy_from_routes(routes, self.settings.default_pool, set(self.settings.pools))
        self.policy_file.parent.mkdir(parents=True, exist_ok=True)
        self.policy_file.write_text(
            "# modelyard demo --distill, phase 1: classification to the frontier\n" + policy_text(before)
        )

    async def _loop(self) -> int:
        await ensure_topics(self.settings.kafka, self.settings.pools)
        self._start_processes()
        if self.dataset is not None:
            lines, self.truth = labelled_lines(self.dataset, self.run_id)
            before = DATASET_BEFORE
        else:
            lines, self.truth, before = dataset_lines(self.run_id), {}, BEFORE_LINES
        self.console.rule("phase 1: every classification item to the frontier")
        await self._phase(lines[:before], "before: frontier only")
        self.supervisor.stop("sink")
        self.console.rule("distill: train the student on the frontier's answers")
        if not self._distill():
            return 1
        self.supervisor.start("sink", "sink")
        await asyncio.sleep(
            max(self.settings.router.reload_interval_s, self.settings.distill.reload_interval_s) + 1
        )
        self.console.rule("phase 2: the proposed policy, the student in the SLM pool")
        await self._phase(lines[before:], "after: student + cascade")
        self.supervisor.stop("sink")
        self._print_numbers()
        return 0

    async def _phase(self, lines: list[tuple[int, bytes]], label: str) -> None:
        watcher = await self._watch_results()
        try:
            summary = await self._submitter().submit_lines(lines, len(lines), label)
            print_summary(summary, self.console, limit=5)
            await self._await_results(watcher, summary.submitted)
        finally:
            await watcher.stop()
        await self._await_pools()
        await self._await_sink()

    async def _await_pools(self) -> None:
        """Shadow copies and escalations may still be in flight after every job has its final result."""
        deadline, kafka = time.monotonic() + STALL_TIMEOUT_S, self.settings.kafka
        for pool in self.settings.pools:
            while (
                await group_lag(kafka, self.settings.group_id(f"pool.{pool}"), [kafka.pool_topic(pool)]) > 0
            ):
                self.supervisor.check_alive()
                if time.monotonic() > deadline:
                    raise ProcessError(f"pool {pool} did not finish its topic")
                await asyncio.sleep(0.5)

    def _distill(self) -> bool:
        store = ClickHouseStore(self.settings.clickhouse)
        try:
            outcome = Distiller(
                self.settings.distill,
                ModelRegistry(self.settings.models_dir, self.settings.distill.encoder_dir),
                store,
            ).run(TaskType.CLASSIFICATION, self.settings.distill.target, self.settings.distill.holdout)
        finally:
            store.close()
        self.console.print(outcome_table(outcome))
        if not outcome.registered:
            self.console.print(f"[yellow]stopping here[/yellow]: {outcome.reason}", highlight=False)
            return False
        proposal = self.settings.state_dir / "proposed-policy-classification.yaml"
        diff, _ = write_proposal(
            self.settings, TaskType.CLASSIFICATION, self.settings.distill.pool, proposal, outcome
        )
        self.console.print(diff, markup=False, highlight=False)
        shutil.copyfile(proposal, self.policy_file)
        self.console.print(f"applied: {proposal} copied over {self.policy_file} (the router reloads it)")
        return True

    def _print_numbers(self) -> None:
        store = ClickHouseStore(self.settings.clickhouse)
        try:
            phases = [
                self._numbers(store, "before", f"{self.run_id}-b-"),
                self._numbers(store, "after", f"{self.run_id}-a-"),
            ]
        finally:
            store.close()
        self.console.print(numbers_table(phases, self.run_id))

    def _numbers(self, store: ClickHouseStore, name: str, prefix: str) -> PhaseNumbers:
        teachers = self.settings.distill.teacher_pools
        jobs, frontier_jobs, measured, agreeing = store.query(
            PHASE_SQL, {"prefix": prefix, "teachers": teachers}
        )[0]
        cost, shadow_cost, frontier_calls = store.query(COST_SQL, {"prefix": prefix, "teachers": teachers})[0]
        finals = [(j, out) for j, out in store.query(FINALS_SQL, {"prefix": prefix}) if j in self.truth]
        return PhaseNumbers(
            name,
            int(jobs),
            int(frontier_jobs),
            int(frontier_calls),
            float(cost),
            float(shadow_cost),
            int(measured),
            int(agreeing),
            len(finals),
            sum(out == self.truth[j] for j, out in finals),
        )


def numbers_table(phases: list[PhaseNumbers], run: str) -> Table:
    table = Table(
        "phase",
        "jobs",
        "frontier share",
        "frontier calls",
        "cost USD",
        "USD / 1k jobs",
        "agreement",
        "measured on",
        "accuracy (truth)",
        "shadow USD",
        title=f"run {run}: the distillation loop, read back from ClickHouse",
    )
    for p in phases:
        per_k = p.cost_usd / p.jobs * 1000 if p.jobs else 0.0
        table.add_row(
            p.name,
            f"{p.jobs:,}",
            f"{p.frontier_share:.1%}",
            f"{p.frontier_calls:,}",
            f"${p.cost_usd:,.6f}",
            f"${per_k:,.6f}",
            f"{p.agreement:.3f}",
            f"{p.measured:,}",
            p.accuracy,
            f"${p.shadow_cost_usd:,.6f}",
        )
    return table
