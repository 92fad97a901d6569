"""OpenAI Batch and Anthropic Message Batches: the real SDKs against the simulator's batch endpoints."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from modelyard.core._exceptions import ProviderError
from schemas import TaskType, WorkItem
from tests.helpers import CLASSIFY, EXTRACT, anthropic_backend, openai_backend, simulator_with_settings
from workers.pools.backends.anthropic_batch import AnthropicBatchBackend
from workers.pools.backends.base import BatchBackend, BatchRequest, Completion
from workers.pools.backends.openai_batch import OpenAIBatchBackend

pytestmark = pytest.mark.integration

FAILING = WorkItem(job_id="f", tenant="t", task="generation", input="please [batch-fail] this one")
REQUESTS: list[BatchRequest] = [
    ("item-0", CLASSIFY, TaskType.CLASSIFICATION),
    ("item-1", EXTRACT, TaskType.EXTRACTION),
    ("item-2", FAILING, TaskType.GENERATION),
]
TASKS = {cid: task for cid, _, task in REQUESTS}


async def until_ended(backend: BatchBackend, batch_id: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not (status := await backend.status(batch_id)).ended:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    return status.state


def batch_backends(settings) -> dict[str, BatchBackend]:  # type: ignore[no-untyped-def]
    return {
        "openai": OpenAIBatchBackend(openai_backend(settings, "openai"), "frontier"),
        "anthropic": AnthropicBatchBackend(anthropic_backend(settings)),
    }


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_round_trip_gives_the_interactive_answer_per_custom_id_and_a_per_request_error(
    provider: str,
) -> None:
    async def scenario() -> None:
        async with simulator_with_settings(batch_delay_s=0.5) as (sim, settings):
            sim.faults.update({"batch_error_marker": "[batch-fail]"})
            backend = batch_backends(settings)[provider]
            batch_id = await backend.submit(REQUESTS)
            assert not (await backend.status(batch_id)).ended  # still running for batch_delay_s
            assert await until_ended(backend, batch_id) in {"completed", "ended"}
            outcomes = await backend.results(batch_id, TASKS)
            assert set(outcomes) == set(TASKS)
            label, extracted, failed = (outcomes[c] for c in ("item-0", "item-1", "item-2"))
            assert isinstance(label, Completion) and label.output in {"billing", "bug", "other"}
            assert isinstance(extracted, Completion) and set(orjson.loads(extracted.output)) == {
                "order_id",
                "customer",
            }
            interactive = await backend_for_calls(settings, provider).complete(
                CLASSIFY, TaskType.CLASSIFICATION
            )
            assert (
                label.usage == interactive.usage and label.output == interactive.output
            )  # same request, same answer
            assert isinstance(failed, ProviderError) and failed.retryable
            assert ("HTTP 500" if provider == "openai" else "api_error") in str(failed)
            assert sim.stats[f"{provider}.batches"] == 1 and sim.stats[f"{provider}.batch_errored"] == 1
            await backend.close()

    asyncio.run(scenario())


def backend_for_calls(settings, provider: str):  # type: ignore[no-untyped-def]
    return openai_backend(settings, "openai") if provider == "openai" else anthropic_backend(settings)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_cancelled_batch_reports_every_request_as_retryable(provider: str) -> None:
    async def scenario() -> None:
        async with simulator_with_settings(batch_delay_s=60) as (_, settings):
            backend = batch_backends(settings)[provider]
            batch_id = await backend.submit(REQUESTS[:2])
            await backend.cancel(batch_id)
            assert await until_ended(backend, batch_id) in {"cancelled", "ended"}
            outcomes = await backend.results(batch_id, TASKS)
            assert set(outcomes) == {"item-0", "item-1"}
            assert all(
                isinstance(o, ProviderError) and o.retryable and "cancel" in str(o) for o in outcomes.values()
            ), outcomes
            await backend.close()

    asyncio.run(scenario())


def test_anthropic_custom_ids_are_checked_like_the_real_api() -> None:
    async def scenario() -> None:
        async with simulator_with_settings() as (_, settings):
            backend = AnthropicBatchBackend(anthropic_backend(settings, max_retries=0))
            with pytest.raises(ProviderError, match="HTTP 400: custom_id 'job.1/a'") as caught:
                await backend.submit([("job.1/a", CLASSIFY, TaskType.CLASSIFICATION)])
            assert not caught.value.retryable
            await backend.close()

    asyncio.run(scenario())
