"""The simulator's fault knobs, seen through the real SDKs: lognormal latency, hangs (client timeouts),
faults aimed at one model, forced low confidence."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from modelyard.core._exceptions import ProviderError
from modelyard.core.settings import load_settings
from modelyard.local.simulator import ProviderSimulator
from schemas import TaskType, WorkItem
from tests.helpers import CLASSIFY, openai_backend, simulator_with_settings

pytestmark = pytest.mark.integration


def test_lognormal_latency_has_the_median_asked_for_and_a_tail() -> None:
    sim = ProviderSimulator(load_settings().simulator)
    sim.faults.update({"latency_ms": 20, "latency_sigma": 0.8})
    samples = sorted(sim._latency_s() * 1000 for _ in range(4000))
    assert 17 < statistics.median(samples) < 23
    assert samples[int(0.99 * len(samples))] > 3 * statistics.median(
        samples
    )  # heavy tail, unlike uniform jitter


def test_hanging_requests_time_out_and_faults_can_target_one_model() -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (sim, settings):
            sim.faults.update({"timeout_rate": 1.0, "hang_s": 1, "fault_model": "other-model"})
            backend = openai_backend(settings, timeout_s=0.3, max_retries=0)
            assert (
                await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
            ).output  # not the targeted model
            sim.faults.update({"fault_model": ""})
            with pytest.raises(ProviderError, match="timed out") as caught:
                await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert caught.value.retryable and sim.stats["openai.hung"] == 1
            await backend.close()

    asyncio.run(scenario())


def test_low_confidence_marker_forces_a_low_first_token_probability() -> None:
    marked = CLASSIFY.model_copy(update={"input": "[unsure] charged twice"})

    async def scenario() -> None:
        async with simulator_with_settings() as (sim, settings):
            sim.faults.update({"low_confidence_marker": "[unsure]"})
            backend = openai_backend(settings)
            assert (await backend.complete(marked, TaskType.CLASSIFICATION)).confidence == pytest.approx(0.05)
            assert (await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)).confidence >= 0.35
            await backend.close()

    asyncio.run(scenario())


def test_an_invalid_json_schema_is_a_400_like_the_real_apis_not_a_crash() -> None:
    """Through the real SDK: the simulator refuses the schema with HTTP 400 (the request's fault, so the
    backend does not retry it), where it used to crash its handler with a 500."""
    bad = WorkItem(
        job_id="bad-schema",
        tenant="acme",
        task="extraction",
        input="Order 42 shipped",
        params={"json_schema": {"type": "object", "properties": {"order": {"type": "decimal"}}}},
    )

    async def scenario() -> None:
        async with simulator_with_settings() as (sim, settings):
            backend = openai_backend(settings, max_retries=2)
            with pytest.raises(ProviderError, match="properties.order.type") as caught:
                await backend.complete(bad, TaskType.EXTRACTION)
            assert not caught.value.retryable and sim.stats["openai.400"] == 1
            await backend.close()

    asyncio.run(scenario())
