"""Faust topic objects for the router: the jobs source, one topic per pool, the dead-letter topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import faust

from modelyard.core.settings import KafkaSettings


@dataclass(frozen=True)
class RouterTopics:
    jobs: faust.TopicT
    outputs: dict[str, faust.TopicT]

    @classmethod
    def declare(cls, app: faust.App, kafka: KafkaSettings, pools: Iterable[str]) -> RouterTopics:
        names = [kafka.pool_topic(pool) for pool in pools] + [
            kafka.dead_letter_topic,
            kafka.deferred_topic,
        ]
        outputs = {name: app.topic(name, key_type=bytes, value_type=bytes) for name in names}
        return cls(jobs=app.topic(kafka.jobs_topic, key_type=bytes, value_type=bytes), outputs=outputs)
