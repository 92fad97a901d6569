"""What a running pipeline says about itself: its processes' Prometheus endpoints and probes, and each
consumer group's lag as Kafka counts it. Read by `modelyard status` and `modelyard top`."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from modelyard.core._exceptions import BrokerError
from modelyard.core.kafka import kafka_errors, make_admin, make_reader
from modelyard.core.settings import Settings
from modelyard.core.topics import assigned_partitions, sink_topics

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One /metrics page: (sample name, sorted labels) -> value. Empty when nothing answered."""

    values: dict[tuple[str, Labels], float] = field(default_factory=dict)
    answered: bool = False

    def total(self, name: str, **where: str) -> float:
        return sum(v for (n, labels), v in self.values.items() if n == name and _matches(labels, where))

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        """Sum of `name` per value of `label`."""
        out: dict[str, float] = {}
        for (n, labels), value in self.values.items():
            if n == name and _matches(labels, where):
                key = dict(labels).get(label, "")
                out[key] = out.get(key, 0.0) + value
        return out

    def buckets(self, name: str, **where: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts (upper bound -> count), summed over matching series."""
        out: dict[float, float] = {}
        for (n, labels), value in self.values.items():
            if n == f"{name}_bucket" and _matches(labels, where):
                bound = float(dict(labels)["le"])
                out[bound] = out.get(bound, 0.0) + value
        return dict(sorted(out.items()))

    def merged(self, other: Scrape) -> Scrape:
        values = dict(self.values)
        for key, value in other.values.items():
            values[key] = values.get(key, 0.0) + value
        return Scrape(values, self.answered or other.answered)


def _matches(labels: Labels, where: dict[str, str]) -> bool:
    found = dict(labels)
    return all(found.get(k) == v for k, v in where.items())


def parse_metrics(text: str) -> Scrape:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return Scrape(values, answered=True)


def scrape(url: str, timeout: float = 2.0) -> Scrape:
    """The process's /metrics (an empty Scrape when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as response:
            return parse_metrics(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return Scrape()


def probe(url: str, path: str, timeout: float = 2.0) -> int:
    """The HTTP status of GET url+path; 0 when nothing answered."""
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def rate(before: float, after: float, seconds: float) -> float:
    return max(0.0, after - before) / seconds if seconds > 0 else 0.0


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (upper bound -> count); None without data."""
    if not buckets:
        return None
    total = buckets.get(math.inf, max(buckets.values()))
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets.items():
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def bucket_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """Every consumer group of the pipeline (as its processes name them) -> the topics it reads."""
    kafka, app = settings.kafka, settings.app_id
    groups = {f"{app}.router": [kafka.jobs_topic]}
    groups |= {f"{app}.pool.{pool}": [kafka.pool_topic(pool)] for pool in settings.pools}
    groups[f"{app}.sink"] = sink_topics(kafka, settings.pools)
    return groups


class LagReader:
    """Lag per consumer group (end offsets minus committed), with one admin client and one consumer kept open
    between reads (a live view reads every second)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.groups = consumer_groups(settings)
        topics = list(dict.fromkeys(t for ts in self.groups.values() for t in ts))
        self.admin = make_admin(settings.kafka, request_timeout_ms=5_000)
        # subscribed without a group: assigned every partition, which it only asks the end offsets of
        self.consumer = make_reader(settings.kafka, *topics, offset_reset="latest")
        self.partitions: set[TopicPartition] = set()

    async def __aenter__(self) -> LagReader:
        try:
            with kafka_errors(f"reach {self.settings.kafka.bootstrap_servers}"):
                await self.admin.start()
                await self.consumer.start()
                self.partitions = await assigned_partitions(self.consumer)
        except BrokerError:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def lags(self) -> dict[str, int | None]:
        """Group -> records not yet committed (None when Kafka could not say this time)."""
        with kafka_errors("read end offsets"):
            ends = await self.consumer.end_offsets(list(self.partitions))
        out: dict[str, int | None] = {}
        for group, topics in self.groups.items():
            try:
                with kafka_errors(f"read {group}'s offsets"):
                    committed = await self.admin.list_consumer_group_offsets(group)
            except (TimeoutError, BrokerError):
                out[group] = None
                continue
            mine = self._partitions(topics)
            out[group] = sum(
                ends.get(tp, 0)
                - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                for tp in mine
            )
        return out

    def _partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [tp for tp in self.partitions if tp.topic in topics]
