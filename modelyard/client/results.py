"""ResultReader: follows the results (and dead-letter) topics without a consumer group, so reading changes
nothing for the pipeline, and picks out the jobs asked for."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Literal

import orjson

from modelyard.client.outcomes import Outcome, Rejected
from modelyard.core._exceptions import BrokerError
from modelyard.core.kafka import kafka_errors, make_reader
from modelyard.core.settings import KafkaSettings
from modelyard.core.topics import assigned_partitions
from schemas import DeadLetter, Result
from schemas.decoding import decode

Start = datetime | Literal["beginning", "end"]
# A job_id submitted twice is dead-lettered the second time while the first copy is answered: not an outcome.
NOT_FINAL_REJECTIONS = {"duplicate_job_id"}


class ResultReader:
    def __init__(self, kafka: KafkaSettings, start: Start = "end") -> None:
        self.kafka = kafka
        self.start = start

    async def outcomes(self, job_ids: set[str], timeout: float | None = None) -> AsyncIterator[Outcome]:
        """The final Result or the Rejected of each job, once each, until all are in (BrokerError after
        `timeout` seconds, naming up to 5 jobs still open)."""
        open_jobs = set(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        topics = [self.kafka.results_topic, self.kafka.dead_letter_topic]
        async with Following(self.kafka, topics, self.start) as following:
            while open_jobs:
                if deadline is not None and time.monotonic() > deadline:
                    waiting = ", ".join(sorted(open_jobs)[:5])
                    raise BrokerError(
                        f"{len(open_jobs)} jobs have no outcome after {timeout:.0f}s (e.g. {waiting})",
                        hint="check `modelyard status` and `modelyard dlq list`; a job deferred by a budget "
                        "waits for `modelyard deferred release`",
                    )
                for topic, value in await following.batch():
                    outcome = self._outcome(topic, value)
                    if outcome is not None and outcome.job_id in open_jobs:
                        open_jobs.discard(outcome.job_id)
                        yield outcome

    async def tail(self, wanted: Callable[[Result], bool], follow: bool) -> AsyncIterator[Result]:
        """Every Result (every attempt) that `wanted` accepts, from the start position; with `follow`, keep
        waiting for more, else stop at the end of the topic."""
        async with Following(self.kafka, [self.kafka.results_topic], self.start) as following:
            while True:
                batch = await following.batch()
                for _, value in batch:
                    result = decode(Result, value)
                    if isinstance(result, Result) and wanted(result):
                        yield result
                if not follow and not batch and await following.at_end():
                    return

    def _outcome(self, topic: str, value: bytes | None) -> Outcome | None:
        if topic == self.kafka.results_topic:
            result = decode(Result, value)
            return result if isinstance(result, Result) and result.status.is_final else None
        return rejection(value)


def rejection(value: bytes | None) -> Rejected | None:
    """The Rejected a router dead letter stands for, when its original names a job_id."""
    letter = decode(DeadLetter, value)
    if (
        not isinstance(letter, DeadLetter)
        or letter.stage != "router"
        or letter.reason in NOT_FINAL_REJECTIONS
    ):
        return None
    try:
        original = orjson.loads(base64.b64decode(letter.original_b64))
    except (orjson.JSONDecodeError, ValueError):
        return None
    job_id = original.get("job_id") if isinstance(original, dict) else None
    if not isinstance(job_id, str):
        return None
    return Rejected(job_id, letter.stage, letter.reason, letter.field, letter.error)


class Following:
    """A group-less consumer over every partition of `topics`, positioned at `start` (the partitions that
    exist when it starts)."""

    def __init__(self, kafka: KafkaSettings, topics: list[str], start: Start) -> None:
        self.kafka, self.topics, self.start = kafka, topics, start
        # subscribed without a group: it is assigned every partition of the topics
        self.consumer = make_reader(kafka, *topics, offset_reset="latest")

    async def __aenter__(self) -> Following:
        try:
            with kafka_errors(f"read {self.topics} on {self.kafka.bootstrap_servers}"):
                await self.consumer.start()
                await self._position()
        except BrokerError:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def _position(self) -> None:
        partitions = sorted(await assigned_partitions(self.consumer))
        # the subscription only named the partitions: a manual assignment keeps the positions sought below
        # (a subscription's next metadata refresh would reset them)
        self.consumer.unsubscribe()
        self.consumer.assign(partitions)
        # explicit offsets, not seek_to_end(): that resolves lazily, and records appended before it resolves
        # would be skipped (results land within milliseconds of their jobs)
        ends = await self.consumer.end_offsets(partitions)
        if self.start == "beginning":
            # explicit offsets here too: seek_to_beginning() only requests a reset, and a reset to the latest
            # offset already in flight (the consumer's default, requested on assign) could still land after it
            starts = await self.consumer.beginning_offsets(partitions)
            for tp in partitions:
                self.consumer.seek(tp, starts[tp])
            return
        found = {}
        if isinstance(
            self.start, datetime
        ):  # asked after `ends`: a partition with nothing as new starts there
            found = await self.consumer.offsets_for_times(
                {tp: int(self.start.timestamp() * 1000) for tp in partitions}
            )
        for tp in partitions:
            self.consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])

    async def batch(self, timeout_ms: int = 500) -> list[tuple[str, bytes | None]]:
        """The records fetched within `timeout_ms`, as (topic, value)."""
        polled = await self.consumer.getmany(timeout_ms=timeout_ms)
        return [(tp.topic, record.value) for tp, records in polled.items() for record in records]

    async def at_end(self) -> bool:
        partitions = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(partitions)
        for tp in partitions:
            if await self.consumer.position(tp) < ends[tp]:
                return False
        return True
