"""The router's output records: an Assignment on its pool's topic (keyed by job_id), a shadow copy, an item
parked on the deferred topic, a dead letter with the original bytes and where they came from, and the routed
job ids of a batch (streams/routed_jobs.py)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import orjson

from modelyard.core.observability import DEAD_LETTERS
from modelyard.core.settings import KafkaSettings
from schemas.rejection import Rejection
from schemas.work_item_struct import WorkItemStruct
from streams.admission import Item, Source
from streams.decision import Decision

SHADOW_PREFIX = "shadow:"


class Outgoing(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    shadow: Outgoing | None = None  # a copy of an SLM-bound item for the frontier, to measure agreement


class OutputRecords:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._pool_topics: dict[str, str] = {}

    def topic(self, pool: str) -> str:
        topic = self._pool_topics.get(pool)
        return topic if topic is not None else self._pool_topics.setdefault(pool, self.kafka.pool_topic(pool))

    def assignments(
        self, items: list[Item], decisions: list[Decision], records: list[tuple[bytes, Source]], now: datetime
    ) -> list[Outgoing]:
        """The usual batch's outputs (no budgets, no shadows), in one pass."""
        topic = self.topic
        return [
            Outgoing(topic(d.pool), item.job_id.encode(), assignment_json(record[0], d, now))
            for item, d, record in zip(items, decisions, records, strict=False)
        ]

    def assignment(
        self, item: Item, raw: bytes, decision: Decision, now: datetime, shadow: Outgoing | None = None
    ) -> Outgoing:
        return Outgoing(
            self.topic(decision.pool), item.job_id.encode(), assignment_json(raw, decision, now), shadow
        )

    def shadow_copy(self, item: Item, decision: Decision, now: datetime) -> Outgoing:
        """The item again under job_id 'shadow:<job_id>', billed to tenant 'shadow', for the shadow pool."""
        job_id = f"{SHADOW_PREFIX}{item.job_id}"[:128]
        model = item.to_model() if isinstance(item, WorkItemStruct) else item
        copy = model.model_copy(
            update={
                "job_id": job_id,
                "tenant": "shadow",
                "metadata": {**model.metadata, "shadow_of": item.job_id, "tenant": item.tenant},
            }
        )
        return Outgoing(
            self.topic(decision.pool),
            job_id.encode(),
            assignment_json(copy.model_dump_json().encode(), decision, now),
        )

    def deferred(self, item: Item, raw: bytes) -> Outgoing:
        """The original bytes as they came, until `modelyard deferred release` sends them back."""
        return Outgoing(self.kafka.deferred_topic, item.job_id.encode(), raw)

    def routed_jobs(self, records: list[tuple[bytes, bytes]]) -> list[Outgoing]:
        """A batch's records of the job ids it sent to pools (key: the jobs partition)."""
        topic = self.kafka.routed_jobs_topic
        return [Outgoing(topic, key, value) for key, value in records]

    def dead_letter(self, rejection: Rejection, raw: bytes | None, source: Source) -> Outgoing:
        letter = rejection.dead_letter(
            raw or b"",
            "router",
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            signature=source.signature.decode(errors="replace")[:200] if source.signature else None,
        )
        DEAD_LETTERS.labels("router", rejection.reason).inc()
        return Outgoing(self.kafka.dead_letter_topic, None, letter.model_dump_json().encode())


def assignment_json(raw: bytes, d: Decision, now: datetime) -> bytes:
    """The Assignment wire record, embedding the already-validated item bytes as they came (no re-encoding);
    with the result-cache directive when the policy opts the item's tenant and task in."""
    record = {
        "schema_version": 1,
        "item": orjson.Fragment(raw),
        "task_type": d.task_type,
        "task_reason": d.task_reason[:500],
        "pool": d.pool,
        "rule": d.rule,
        "reason": d.reason[:500],
        "novelty_score": d.novelty_score,
        "input_tokens_est": d.features.input_tokens,
        "attempt": 1,
        "routed_at": now,
    }
    if d.cache is not None:
        record["cache"] = d.cache
    if d.reserved_usd:
        record["reserved_usd"] = str(d.reserved_usd)
    return orjson.dumps(record)
