"""RoutingPolicy: decode once, tag the task type, pick a pool from the task -> pool table. No Faust here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from modelyard.settings import Settings
from schemas import Assignment, TaskType, WorkItem
from schemas.decoding import DecodeFailure, decode

log = logging.getLogger("modelyard.router")


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes


def infer_task(item: WorkItem) -> tuple[TaskType, str]:
    """The task hint when given; otherwise read it off the item's shape."""
    if item.task is not None:
        return item.task, "hint"
    if item.params.labels:
        return TaskType.CLASSIFICATION, "inferred: params.labels present"
    if item.params.json_schema:
        return TaskType.EXTRACTION, "inferred: params.json_schema present"
    return TaskType.OTHER, "inferred: no labels or schema"


class RoutingPolicy:
    def __init__(self, settings: Settings) -> None:
        self.kafka = settings.kafka
        self.routes = dict(settings.routes)
        self.default_pool = settings.default_pool

    def pool_for(self, task_type: TaskType) -> tuple[str, str]:
        pool = self.routes.get(task_type)
        if pool is None:
            return self.default_pool, "default pool"
        return pool, f"route {task_type.value} -> {pool}"

    def assign(self, item: WorkItem) -> Assignment:
        task_type, task_reason = infer_task(item)
        pool, reason = self.pool_for(task_type)
        return Assignment(
            item=item, task_type=task_type, task_reason=task_reason, pool=pool, reason=reason,
            routed_at=datetime.now(UTC),
        )

    def route(self, raw: bytes | None, source: Source) -> Outgoing:
        """One input record -> one output record (its pool's topic, or the dead-letter topic). Never raises."""
        try:
            return self._route(raw, source)
        except Exception as exc:  # a defect of ours must not make Faust ack and drop the record
            log.exception("router failed on %s", source)
            return self._dead(DecodeFailure("router_error", None, f"{type(exc).__name__}: {exc}"), raw, source)

    def _route(self, raw: bytes | None, source: Source) -> Outgoing:
        item = decode(WorkItem, raw)
        if isinstance(item, DecodeFailure):
            return self._dead(item, raw, source)
        assignment = self.assign(item)
        topic = self.kafka.pool_topic(assignment.pool)
        return Outgoing(topic, item.job_id.encode(), assignment.model_dump_json().encode())

    def _dead(self, failure: DecodeFailure, raw: bytes | None, source: Source) -> Outgoing:
        letter = failure.dead_letter(
            raw or b"", "router", source_topic=source.topic, source_partition=source.partition,
            source_offset=source.offset,
        )
        return Outgoing(self.kafka.dead_letter_topic, None, letter.model_dump_json().encode())
