"""The real openai and anthropic SDKs against the simulator's HTTP wire protocols (no monkeypatching)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from aiohttp import web

from modelyard.core._exceptions import ProviderError, RateLimited
from modelyard.core.settings import Settings, load_settings
from modelyard.local.simulator import ProviderSimulator
from schemas import TaskType, WorkItem
from tests.conftest import free_port
from workers.pools.backends.anthropic_messages import AnthropicBackend
from workers.pools.backends.openai_chat import OpenAIChatBackend

pytestmark = pytest.mark.integration

CLASSIFY = WorkItem(
    job_id="c",
    tenant="t",
    task="classification",
    input="charged twice",
    params={"labels": ["billing", "bug", "other"]},
)
EXTRACT = WorkItem(
    job_id="e",
    tenant="t",
    task="extraction",
    input="Order 12 by Ada",
    params={
        "json_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}, "customer": {"type": "string"}},
        }
    },
)
LONG_SYSTEM = "Follow the house style guide. " * 60


@asynccontextmanager
async def simulator(**faults: float) -> AsyncIterator[tuple[ProviderSimulator, Settings]]:
    settings = load_settings(simulator={"port": free_port(), "latency_ms": 1, "jitter_ms": 0, **faults})
    sim = ProviderSimulator(settings.simulator)
    runner = web.AppRunner(sim.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.simulator.port).start()
    try:
        yield sim, settings
    finally:
        await runner.cleanup()


def openai_backend(settings: Settings, provider: str = "vllm", **overrides: object) -> OpenAIChatBackend:
    config = settings.providers[provider].model_copy(update=overrides)
    return OpenAIChatBackend(provider, config, settings.pools["slm"], base_url=f"{settings.simulator.url}/v1")


def anthropic_backend(settings: Settings, **overrides: object) -> AnthropicBackend:
    config = settings.providers["anthropic"].model_copy(update=overrides)
    return AnthropicBackend("anthropic", config, settings.pools["frontier"], base_url=settings.simulator.url)


@pytest.mark.parametrize("provider", ["vllm", "openai"])
def test_openai_sdk_classifies_within_label_set_with_usage_and_confidence(provider: str) -> None:
    async def scenario() -> None:
        async with simulator() as (_, settings):
            done = await openai_backend(settings, provider).complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert done.output in {"billing", "bug", "other"}
            assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0
            assert done.confidence is not None and 0 < done.confidence <= 1

    asyncio.run(scenario())


def test_anthropic_sdk_answers_through_forced_tool_use() -> None:
    async def scenario() -> None:
        async with simulator() as (_, settings):
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
        async with simulator() as (_, settings):
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
        async with simulator(rate_429=0.5, retry_after_s=0.05) as (sim, settings):
            backend = openai_backend(settings, max_retries=8)
            results = await asyncio.gather(
                *(backend.complete(CLASSIFY, TaskType.CLASSIFICATION) for _ in range(20))
            )
            assert len(results) == 20
            assert sim.stats["openai.429"] > 0 and sim.stats["openai.200"] == 20

    asyncio.run(scenario())


def test_persistent_429_surfaces_as_rate_limited_with_retry_after() -> None:
    async def scenario() -> None:
        async with simulator(rate_429=1.0, retry_after_s=0.01) as (sim, settings):
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
        async with simulator() as (sim, settings):
            sim.faults.update({"outage_s": 30})
            with pytest.raises(ProviderError) as caught:
                await anthropic_backend(settings, max_retries=1).complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert caught.value.retryable and "503" in str(caught.value)
            assert sim.stats["anthropic.503"] == 2

    asyncio.run(scenario())


def test_timeout_is_translated() -> None:
    async def scenario() -> None:
        async with simulator(latency_ms=500) as (_, settings):
            with pytest.raises(ProviderError, match="timed out"):
                await openai_backend(settings, timeout_s=0.1, max_retries=0).complete(
                    CLASSIFY, TaskType.CLASSIFICATION
                )

    asyncio.run(scenario())
