"""The registered student served by the SLM pool end to end: real Kafka in and out, the pool's dispatcher,
the cascade sending unsure answers on to the frontier (the simulator through the real SDK)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelyard.core.settings import Settings, load_settings
from modelyard.local.simulated_labels import teacher_label
from schemas import Assignment, ResultStatus, TaskType, WorkItem
from tests.integration.test_pools import Pipeline, assert_one_final_each, simulator
from workers.pools.model_registry import ModelRegistry
from workers.pools.student import StudentModel
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
DATASET = Path(__file__).resolve().parents[2] / "modelyard" / "data" / "distill_jobs.jsonl"


def items(start: int, stop: int) -> list[WorkItem]:
    return [
        WorkItem.model_validate(json.loads(line)) for line in DATASET.read_text().splitlines()[start:stop]
    ]


def assignment(item: WorkItem) -> Assignment:
    return Assignment(
        item=item,
        task_type=TaskType.CLASSIFICATION,
        task_reason="hint",
        pool="slm",
        rule="t",
        reason="t",
        routed_at=datetime.now(UTC),
    )


def test_the_student_answers_in_the_slm_pool_and_cascades_when_unsure(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    training = items(0, 1500)
    student = StudentModel.train(
        [i.input_text() for i in training], [teacher_label(i.input_text(), i.params.labels) for i in training]
    )
    ModelRegistry(tmp_path / "models").register(
        student, "classification", 1500, 0, 0.97, 0.95, datetime.now(UTC)
    )
    cascade = {"to_pool": "frontier", "min_confidence": {"classification": 0.6}}
    settings = load_settings(
        pools={"slm": {"provider": "distilled", "model": "student", "cascade": cascade}},
        distill={"models_dir": tmp_path / "models"},
    )
    fresh = items(2500, 2700)

    async def scenario() -> None:
        async with simulator(settings), Pipeline(settings, ["slm", "frontier"]) as pipeline:
            by_job = await pipeline.run([assignment(i) for i in fresh])
        assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK)
        firsts = [attempts[0] for attempts in by_job.values()]
        assert {(r.pool, r.provider, r.model) for r in firsts} == {
            ("slm", "distilled", "student@classification-v1")
        }
        escalated = [a for a in by_job.values() if len(a) == 2]
        assert all(
            a[0].status is ResultStatus.ESCALATED and a[0].confidence < 0.6 and a[1].pool == "frontier"
            for a in escalated
        )
        assert 0 < len(escalated) < len(fresh) * 0.25
        kept = [a[0] for a in by_job.values() if len(a) == 1]
        assert all(
            r.confidence >= 0.6 and r.usage.input_tokens >= len(item_text(fresh, r.job_id)) // 4 for r in kept
        )
        teacher = {i.job_id: teacher_label(i.input_text(), i.params.labels) for i in fresh}
        agreement = sum(a[-1].output == teacher[j] for j, a in by_job.items()) / len(by_job)
        assert agreement >= 0.95
        cost = PriceCatalog.load().cost(kept[0])
        assert cost.self_hosted and cost.catalog_version.startswith("distilled@") and cost.total_usd > 0

    asyncio.run(scenario())


def item_text(fresh: list[WorkItem], job_id: str) -> str:
    return next(i.input_text() for i in fresh if i.job_id == job_id)
