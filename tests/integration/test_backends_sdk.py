"""The real openai and anthropic SDKs against the simulator's HTTP wire protocols (no monkeypatching)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from modelyard.core._exceptions import ProviderError, RateLimited
from schemas import TaskType
from tests.helpers import (
    CLASSIFY,
    EXTRACT,
    anthropic_backend,
    openai_backend,
    simulator_with_settings,
)

pytestmark = pytest.mark.integration

LONG_SYSTEM = "Follow the house style guide. " * 60


@pytest.mark.parametrize("provider", ["vllm", "openai"])
def test_openai_sdk_classifies_within_label_set_with_usage_and_confidence(provider: str) -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (_, settings):
            done = await openai_backend(settings, provider).complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert done.output in {"billing", "bug", "other"}
            assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0
            assert done.confidence is not None and 0 < done.confidence <= 1

    asyncio.run(scenario())


def test_anthropic_sdk_answers_through_forced_tool_use() -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (_, settings):
            backend = anthropic_backend(settings)
            label = await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert label.output in {"billing", "bug", "other"}
            extracted = orjson.loads((await backend.complete(EXTRACT, TaskType.EXTRACTION)).output)
            assert set(extracted) == {"order_id", "customer"} and isinstance(extracted["order_id"], int)

    asyncio.run(scenario())


def test_cached_prompt_tokens_are_split_out_for_both_wire_formats() -> None:
    item = CLASSIFY.model_copy(
        update={"params": CLASSIFY.params.model_copy(update={"instructions": LONG_SYSTEM + "{labels}"})}
    )

    async def scenario() -> None:
        async with simulator_with_settings() as (_, settings):
            for backend in (openai_backend(settings), anthropic_backend(settings)):
                first = await backend.complete(item, TaskType.CLASSIFICATION)
                second = await backend.complete(item, TaskType.CLASSIFICATION)
                assert first.usage.cached_input_tokens == 0
                assert second.usage.cached_input_tokens > 0
                assert (
                    second.usage.input_tokens + second.usage.cached_input_tokens == first.usage.input_tokens
                )

    asyncio.run(scenario())


def test_sdk_retries_429_honouring_retry_after_then_succeeds() -> None:
    async def scenario() -> None:
        async with simulator_with_settings(rate_429=0.5, retry_after_s=0.05) as (sim, settings):
            backend = openai_backend(settings, max_retries=8)
            results = await asyncio.gather(
                *(backend.complete(CLASSIFY, TaskType.CLASSIFICATION) for _ in range(20))
            )
            assert len(results) == 20
            assert sim.stats["openai.429"] > 0 and sim.stats["openai.200"] == 20

    asyncio.run(scenario())


def test_persistent_429_surfaces_as_rate_limited_with_retry_after() -> None:
    async def scenario() -> None:
        async with simulator_with_settings(rate_429=1.0, retry_after_s=0.01) as (sim, settings):
            for backend in (
                openai_backend(settings, max_retries=1),
                anthropic_backend(settings, max_retries=1),
            ):
                with pytest.raises(RateLimited) as caught:
                    await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
                assert caught.value.retry_after == pytest.approx(0.01)
            assert sim.stats["openai.429"] == 2 and sim.stats["anthropic.429"] == 2

    asyncio.run(scenario())


def test_outage_is_a_retryable_provider_error_after_sdk_retries() -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (sim, settings):
            sim.faults.update({"outage_s": 30})
            with pytest.raises(ProviderError) as caught:
                await anthropic_backend(settings, max_retries=1).complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert caught.value.retryable and "503" in str(caught.value)
            assert sim.stats["anthropic.503"] == 2

    asyncio.run(scenario())


def test_timeout_is_translated() -> None:
    async def scenario() -> None:
        async with simulator_with_settings(latency_ms=500) as (_, settings):
            with pytest.raises(ProviderError, match="timed out"):
                await openai_backend(settings, timeout_s=0.1, max_retries=0).complete(
                    CLASSIFY, TaskType.CLASSIFICATION
                )

    asyncio.run(scenario())
