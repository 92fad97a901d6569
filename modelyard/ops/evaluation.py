"""`modelyard eval`: labelled cases through chosen pools via the real pipeline, scored, and stored.

Each case goes to each pool's topic as an Assignment (the router is bypassed so the pool is forced), under
the billing tenant `eval` (the case's tenant stays in metadata) and job ids `eval-<run>-<pool>-<case>`.
The pool's own first attempt is scored; scores go to the evals topic, which the sink writes to ClickHouse.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console

from modelyard.core._exceptions import InvalidInput, ProcessError
from modelyard.core.kafka import make_producer, make_reader, started
from modelyard.core.progress import progress_bar
from modelyard.core.settings import KafkaSettings
from modelyard.core.topics import assigned_partitions, ensure_topics
from schemas import Assignment, Result, TaskType, WorkItem
from schemas.decoding import validate
from schemas.evaluation import EvalCase, EvalScore
from schemas.rejection import Rejection
from streams.tagging import tag_task
from workers.sink.pricing import PriceCatalog

WORDS = re.compile(r"\w+")
BILLING_TENANT = "eval"


def score(task_type: TaskType, output: str | None, expected: object) -> tuple[bool, float]:
    """(correct, score in [0, 1]): exact label; JSON field match; token F1 against a reference text."""
    output = output or ""
    if task_type is TaskType.CLASSIFICATION:
        hit = output.strip() == str(expected)
        return hit, float(hit)
    if task_type is TaskType.EXTRACTION and isinstance(expected, dict):
        return _field_match(output, expected)
    f1 = token_f1(output, str(expected))
    return f1 >= 0.5, f1


def _field_match(output: str, expected: dict[str, object]) -> tuple[bool, float]:
    try:
        parsed = orjson.loads(output)
    except orjson.JSONDecodeError:
        return False, 0.0
    if not isinstance(parsed, dict) or not expected:
        return False, 0.0
    share = sum(parsed.get(k) == v for k, v in expected.items()) / len(expected)
    return share == 1.0, share


def token_f1(answer: str, reference: str) -> float:
    got, want = Counter(WORDS.findall(answer.lower())), Counter(WORDS.findall(reference.lower()))
    overlap = sum((got & want).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(got.values()), overlap / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def load_cases(path: Path) -> list[EvalCase]:
    cases = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = validate(EvalCase, orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not valid JSON ({exc})") from exc
        if isinstance(case, Rejection):
            raise InvalidInput(f"{path}:{number}: {case.error}", field=case.field)
        cases.append(case)
    return cases


@dataclass(frozen=True)
class Planned:
    case: EvalCase
    pool: str
    assignment: Assignment


def plan(cases: list[EvalCase], pools: list[str], run: str) -> dict[str, Planned]:
    """job_id -> the assignment that forces one case onto one pool."""
    planned = {}
    for case in cases:
        task_type, why = tag_task(case.item)
        for pool in pools:
            job_id = f"eval-{run}-{pool}-{case.item.job_id}"
            metadata = {**case.item.metadata, "eval_run": run, "tenant": case.item.tenant}
            item = case.item.model_copy(
                update={"job_id": job_id, "tenant": BILLING_TENANT, "metadata": metadata}
            )
            assignment = Assignment(
                item=item,
                task_type=task_type,
                task_reason=why,
                pool=pool,
                rule="eval",
                reason=f"eval run {run}",
                routed_at=datetime.now(UTC),
            )
            planned[job_id] = Planned(case, pool, assignment)
    return planned


class EvalRunner:
    def __init__(
        self, kafka: KafkaSettings, pools: Collection[str], catalog: PriceCatalog, console: Console
    ) -> None:
        """pools: the configured ones (those evaluated must be among them)."""
        self.kafka = kafka
        self.configured_pools = pools
        self.catalog = catalog
        self.console = console

    async def run(
        self, cases: list[EvalCase], pools: list[str], run: str, timeout: float = 600
    ) -> list[EvalScore]:
        unknown = sorted(set(pools) - set(self.configured_pools))
        if unknown:
            raise InvalidInput(
                f"--pools: unknown pools {unknown}; configured: {sorted(self.configured_pools)}",
                field="pools",
            )
        await ensure_topics(self.kafka, self.configured_pools)
        planned = plan(cases, pools, run)
        watcher = await self._watch()
        try:
            await self._submit(planned)
            results = await self._collect(watcher, planned, timeout)
        finally:
            await watcher.stop()
        scores = [self._score(planned[job_id], result, run) for job_id, result in results.items()]
        await self._publish(scores)
        return scores

    async def _watch(self) -> AIOKafkaConsumer:
        consumer = make_reader(self.kafka, self.kafka.results_topic, offset_reset="latest")
        await started(consumer, self.kafka)
        for tp in await assigned_partitions(consumer):
            await consumer.position(tp)
        return consumer

    async def _submit(self, planned: dict[str, Planned]) -> None:
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            sends = [
                await producer.send(
                    self.kafka.pool_topic(p.pool),
                    p.assignment.model_dump_json().encode(),
                    key=job_id.encode(),
                )
                for job_id, p in planned.items()
            ]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

    async def _collect(
        self, consumer: AIOKafkaConsumer, planned: dict[str, Planned], timeout: float
    ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        deadline = time.monotonic() + timeout
        with progress_bar(self.console) as progress:
            task = progress.add_task("eval answers", total=len(planned))
            while len(results) < len(planned):
                if time.monotonic() > deadline:
                    raise ProcessError(
                        f"eval: {len(results)}/{len(planned)} answers after {timeout:.0f}s; are the pools running?"
                    )
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for record in records:
                        result = Result.model_validate_json(record.value)
                        if result.job_id in planned and result.attempt == 1:
                            results.setdefault(result.job_id, result)
                progress.update(task, completed=len(results))
        return results

    def _score(self, p: Planned, result: Result, run: str) -> EvalScore:
        correct, value = score(p.assignment.task_type, result.output, p.case.expected)
        return EvalScore(
            run=run,
            case_id=p.case.item.job_id,
            job_id=result.job_id,
            pool=p.pool,
            provider=result.provider,
            model=result.model,
            task_type=p.assignment.task_type,
            status=result.status.value,
            correct=correct and result.status.value != "error",
            score=value,
            confidence=result.confidence,
            cost_usd=format(self.catalog.cost(result).total_usd, "f"),
            latency_ms=result.latency_ms,
            scored_at=datetime.now(UTC),
        )

    async def _publish(self, scores: list[EvalScore]) -> None:
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            topic = self.kafka.evals_topic
            await asyncio.gather(
                *[
                    await producer.send(topic, s.model_dump_json().encode(), key=s.job_id.encode())
                    for s in scores
                ]
            )
        finally:
            await producer.stop()


def summarise(scores: list[EvalScore]) -> tuple[list[str], list[tuple[object, ...]]]:
    groups: dict[tuple[str, str, str], list[EvalScore]] = {}
    for s in scores:
        groups.setdefault((s.task_type.value, s.pool, s.model), []).append(s)
    rows = []
    for (task, pool, model), group in sorted(groups.items()):
        cost = sum(float(s.cost_usd) for s in group)
        latencies = sorted(s.latency_ms for s in group)
        rows.append(
            (
                task,
                pool,
                model,
                len(group),
                sum(s.correct for s in group) / len(group),
                cost,
                latencies[len(latencies) // 2],
            )
        )
    return ["task", "pool", "model", "cases", "accuracy", "cost_usd", "p50_ms"], rows


def case_item(job_id: str, tenant: str, text: str, labels: list[str]) -> WorkItem:
    """A classification case's item (used by dataset generators and tests)."""
    return WorkItem(
        job_id=job_id, tenant=tenant, task=TaskType.CLASSIFICATION, input=text, params={"labels": labels}
    )
