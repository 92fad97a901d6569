"""The lean vLLM client (workers/backends/vllm_http.py) against the simulator's vLLM wire protocol: the same
answers as the openai SDK, and the SDK's retry rules (429 with Retry-After, 5xx, timeouts, no retry on 4xx)."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelyard.core._exceptions import ProviderError, RateLimited
from modelyard.core.settings import Settings
from schemas import TaskType
from tests.helpers import CLASSIFY, EXTRACT, openai_backend, simulator_with_settings
from workers.pools.backends.provider_errors import backoff_s, retry_after_s, should_retry
from workers.pools.backends.vllm_http import VllmHttpBackend

pytestmark = pytest.mark.integration


def lean(settings: Settings, **overrides: object) -> VllmHttpBackend:
    config = settings.providers["vllm"].model_copy(update=overrides)
    return VllmHttpBackend("vllm", config, settings.pools["slm"], base_url=f"{settings.simulator.url}/v1")


def test_lean_client_sends_and_reads_exactly_what_the_sdk_does() -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (_, settings):
            fast, sdk = lean(settings), openai_backend(settings)
            for item, task in ((CLASSIFY, TaskType.CLASSIFICATION), (EXTRACT, TaskType.EXTRACTION)):
                assert fast.body(item, task) == sdk.body(item, task)
                ours, theirs = await fast.complete(item, task), await sdk.complete(item, task)
                assert (ours.output, ours.usage, ours.model) == (theirs.output, theirs.usage, theirs.model)
                assert (
                    ours.confidence == pytest.approx(theirs.confidence)
                    if theirs.confidence
                    else ours.confidence is None
                )
            await fast.close()

    asyncio.run(scenario())


def test_429s_are_retried_after_retry_after_then_succeed() -> None:
    async def scenario() -> None:
        async with simulator_with_settings(rate_429=0.5, retry_after_s=0.05) as (sim, settings):
            backend = lean(settings, max_retries=8)
            results = await asyncio.gather(
                *(backend.complete(CLASSIFY, TaskType.CLASSIFICATION) for _ in range(20))
            )
            assert len(results) == 20 and all(r.output in {"billing", "bug", "other"} for r in results)
            assert sim.stats["openai.429"] > 0 and sim.stats["openai.200"] == 20
            await backend.close()

    asyncio.run(scenario())


def test_persistent_429_is_rate_limited_with_the_servers_retry_after() -> None:
    async def scenario() -> None:
        async with simulator_with_settings(rate_429=1.0, retry_after_s=0.01) as (sim, settings):
            backend = lean(settings, max_retries=1)
            with pytest.raises(RateLimited) as caught:
                await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert caught.value.retry_after == pytest.approx(0.01) and sim.stats["openai.429"] == 2
            await backend.close()

    asyncio.run(scenario())


def test_an_outage_is_retried_then_a_retryable_error() -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (sim, settings):
            sim.faults.update({"outage_s": 30})
            backend = lean(settings, max_retries=2)
            with pytest.raises(ProviderError) as caught:
                await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert caught.value.retryable and "HTTP 503" in str(caught.value) and sim.stats["openai.503"] == 3
            await backend.close()

    asyncio.run(scenario())


def test_a_timeout_is_a_retryable_error() -> None:
    async def scenario() -> None:
        async with simulator_with_settings(latency_ms=500) as (_, settings):
            backend = lean(settings, timeout_s=0.1, max_retries=0)
            started = time.monotonic()
            with pytest.raises(ProviderError, match="timed out") as caught:
                await backend.complete(CLASSIFY, TaskType.CLASSIFICATION)
            assert caught.value.retryable and time.monotonic() - started < 0.4
            await backend.close()

    asyncio.run(scenario())


def test_retry_decisions() -> None:
    assert [should_retry(s) for s in (None, 200, 400, 401, 404, 408, 409, 422, 429, 500, 503)] == [
        True,
        False,
        False,
        False,
        False,
        True,
        True,
        False,
        True,
        True,
        True,
    ]
    assert (
        retry_after_s("2"),
        retry_after_s("0.5"),
        retry_after_s("soon"),
        retry_after_s("-1"),
        retry_after_s(None),
    ) == (2.0, 0.5, None, None, None)
    assert retry_after_s("0") is None and retry_after_s("61") is None  # as the SDKs: only 0 < s <= 60
    assert backoff_s(0, 1.5) == 1.5
    assert 0.375 <= backoff_s(0, None) <= 0.5 and 6.0 <= backoff_s(10, None) <= 8.0
