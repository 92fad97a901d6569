"""The deferrable decision and batch assembly (size and time bounds, one Result per item, releases).

The provider side here is a recording BatchBackend (our own protocol, no SDK); the real SDKs against the
simulator are in tests/integration/test_batch_apis.py and test_batch_pool.py."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from modelyard.core._exceptions import ConfigError, ProviderError, Stopping
from modelyard.core.settings import BatchSettings, load_settings
from schemas import Assignment, ResultStatus, TaskType, Usage, WorkItem
from workers.pools.backends.base import BatchRequest, BatchStatus, Completion
from workers.pools.batching import Batcher, is_deferrable

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def item(job_id: str = "j", deadline: datetime | None = None, text: str = "write a poem") -> WorkItem:
    return WorkItem(job_id=job_id, tenant="acme", task="generation", input=text, deadline=deadline)


def assignment(job_id: str, text: str = "write a poem", deadline: datetime | None = None) -> Assignment:
    return Assignment(
        item=item(job_id, deadline, text),
        task_type=TaskType.GENERATION,
        task_reason="hint",
        pool="frontier",
        reason="test",
        routed_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [
        (None, True),
        (NOW + timedelta(hours=1), False),
        (NOW + timedelta(hours=26), False),
        (NOW + timedelta(hours=26, seconds=1), True),
        (NOW - timedelta(hours=1), False),
    ],
)
def test_deferrable_means_no_deadline_or_one_beyond_the_horizon(
    deadline: datetime | None, expected: bool
) -> None:
    assert is_deferrable(item(deadline=deadline), horizon_s=26 * 3600, now=NOW) is expected


def test_batching_needs_a_provider_with_a_batch_api() -> None:
    with pytest.raises(ConfigError, match="pools.slm.batch.enabled: provider 'vllm' has no batch API"):
        load_settings(pools={"slm": {"batch": {"enabled": True}}})
    assert (
        load_settings(pools={"frontier": {"batch": {"enabled": True}}}).pools["frontier"].batch.max_items
        == 1000
    )


class RecordingBackend:
    """Ends every batch at once; answers '<input>!' with 10/5 tokens, or per-request errors for marked inputs."""

    provider = "anthropic"

    def __init__(self, submit_error: ProviderError | None = None) -> None:
        self.batches: dict[str, list[BatchRequest]] = {}
        self.submit_error = submit_error
        self.cancelled: list[str] = []
        self.closed = False

    async def submit(self, requests: list[BatchRequest]) -> str:
        if self.submit_error:
            raise self.submit_error
        batch_id = f"b{len(self.batches)}"
        self.batches[batch_id] = requests
        return batch_id

    async def status(self, batch_id: str) -> BatchStatus:
        return BatchStatus(batch_id, "ended", True)

    async def results(
        self, batch_id: str, task_types: dict[str, TaskType]
    ) -> dict[str, Completion | Exception]:
        out: dict[str, Completion | Exception] = {}
        for cid, work, _ in self.batches[batch_id]:
            text = work.input_text()
            if "retry" in text:
                out[cid] = ProviderError(
                    "anthropic: batch request api_error: boom", provider="anthropic", retryable=True
                )
            elif "invalid" in text:
                out[cid] = ProviderError(
                    "anthropic: batch request invalid_request_error: no", provider="anthropic"
                )
            elif "lost" not in text:
                out[cid] = Completion(text + "!", Usage(input_tokens=10, output_tokens=5), "claude-sonnet-5")
        return out

    async def cancel(self, batch_id: str) -> None:
        self.cancelled.append(batch_id)

    async def close(self) -> None:
        self.closed = True


def batcher(backend: RecordingBackend, **settings: object) -> Batcher:
    config = BatchSettings(
        **{"enabled": True, "max_items": 3, "max_wait_s": 0.2, "poll_interval_s": 0.01, **settings}
    )  # type: ignore[arg-type]
    return Batcher("frontier", config, backend, "claude-sonnet-5")


def test_items_are_sent_in_batches_of_max_items_then_the_rest_after_max_wait() -> None:
    async def scenario() -> None:
        backend = RecordingBackend()
        b = batcher(backend)
        started = time.monotonic()
        runs = [asyncio.create_task(b.run(assignment(f"j{n}", f"text {n}"), "p0")) for n in range(7)]
        await asyncio.sleep(0.1)
        assert [len(r) for r in backend.batches.values()] == [3, 3]  # full batches go at once
        results = await asyncio.gather(*runs)
        assert time.monotonic() - started >= 0.2  # the last one waited for max_wait_s
        assert [len(r) for r in backend.batches.values()] == [3, 3, 1]
        assert [[cid for cid, _, _ in r] for r in backend.batches.values()] == [
            ["item-0", "item-1", "item-2"]
        ] * 2 + [["item-0"]]
        for n, (result,) in enumerate(results):
            assert (result.job_id, result.status, result.output, result.batch) == (
                f"j{n}",
                ResultStatus.OK,
                f"text {n}!",
                True,
            )
            assert result.usage == Usage(input_tokens=10, output_tokens=5) and result.provider == "anthropic"
        assert b.pending == 0 and b.batches_sent == 3

    asyncio.run(scenario())


def test_per_request_errors_fail_over_when_retryable_and_end_the_job_when_not() -> None:
    async def scenario() -> None:
        b = batcher(RecordingBackend())
        texts = ["fine", "please retry", "invalid one"]
        results = await asyncio.gather(
            *(b.run(assignment(f"j{n}", t), "p0") for n, t in enumerate([*texts, "lost"]))
        )
        statuses = [(r[0].status, r[0].batch, r[0].usage.input_tokens) for r in results]
        assert statuses == [
            (ResultStatus.OK, True, 10),
            (ResultStatus.FAILED_OVER, True, 0),
            (ResultStatus.ERROR, True, 0),
            (ResultStatus.FAILED_OVER, True, 0),
        ]
        assert "api_error" in results[1][0].error and "no outcome" in results[3][0].error

    asyncio.run(scenario())


def test_a_batch_that_cannot_be_submitted_hands_its_items_back_unanswered() -> None:
    async def scenario() -> None:
        b = batcher(
            RecordingBackend(
                ProviderError("anthropic: HTTP 503: outage", provider="anthropic", retryable=True)
            )
        )
        assert await asyncio.gather(*(b.run(assignment(f"j{n}"), "p0") for n in range(3))) == [[], [], []]

    asyncio.run(scenario())


def test_release_and_stop_answer_waiting_items_with_stopping_and_cancel_outstanding_batches() -> None:
    async def scenario() -> None:
        backend = RecordingBackend()
        b = batcher(backend, max_wait_s=30, poll_interval_s=30)
        kept = [
            asyncio.create_task(b.run(assignment(f"k{n}"), "p0")) for n in range(3)
        ]  # a full batch: submitted
        moved = asyncio.create_task(b.run(assignment("m"), "p1"))  # waits in the open batch
        await asyncio.sleep(0.05)
        b.release({"p1"})
        with pytest.raises(Stopping):
            await moved
        assert b.pending == 3 and not any(t.done() for t in kept)
        await b.stop()
        for task in kept:
            with pytest.raises(Stopping):
                await task
        assert backend.cancelled == ["b0"] and backend.closed
        with pytest.raises(Stopping):
            await b.run(assignment("late"), "p0")

    asyncio.run(scenario())


def test_only_deferrable_items_are_accepted_and_only_when_enabled() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert batcher(RecordingBackend()).accepts(assignment("a"))
    assert not batcher(RecordingBackend()).accepts(assignment("a", deadline=soon))
    off = Batcher("frontier", BatchSettings(enabled=False), RecordingBackend(), "claude-sonnet-5")
    assert not off.accepts(assignment("a"))


def test_a_defect_while_reading_results_is_recorded_against_the_jobs_not_left_waiting() -> None:
    class Broken(RecordingBackend):
        async def results(
            self, batch_id: str, task_types: dict[str, TaskType]
        ) -> dict[str, Completion | Exception]:
            raise KeyError("custom_id")

    async def scenario() -> None:
        b = batcher(Broken())
        results = await asyncio.gather(*(b.run(assignment(f"j{n}"), "p0") for n in range(2)))
        assert [(r.status, r.error) for (r,) in results] == [
            (ResultStatus.FAILED_OVER, "internal: KeyError")
        ] * 2

    asyncio.run(scenario())
