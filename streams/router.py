"""The router: every record on the jobs topic becomes exactly one record on a pool or dead-letter topic.

The process is a Faust app (worker, timers, health). Two engines route with the same RoutingPolicy:
"batch" (default, streams/batch_router.py) moves whole fetches; "agent" is a Faust agent in which events are
taken in batches (take_events), each value is decoded once, and outputs go straight to
Faust's producer without awaiting each delivery. Faust flushes its producer before it commits offsets, and
take_events acks a batch only after the loop body has run, so a committed offset always has its output
durable in Kafka (at-least-once; downstream dedups on job_id/attempt). Both engines put the job ids they
route on record (streams/routed_jobs.py) and read that record back before routing newly assigned partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import faust
from faust.app.base import BootStrategy

from modelyard.core._exceptions import BrokerError
from modelyard.core.observability import ROUTE_BATCH_SECONDS, Health, start_health_server
from modelyard.core.settings import KafkaSettings, MetricsSettings, RouterSettings
from modelyard.core.signatures import signature_header
from modelyard.core.spend_feed import SpendFeed
from streams.batch_router import BatchRouter, crash_without_commit
from streams.policy import RoutingPolicy, Source
from streams.routed_jobs import RoutedJobsFeed
from streams.topics import RouterTopics

log = logging.getLogger("modelyard.router")
BATCH_WITHIN_S = 0.05
SPEND_POLL_S = 0.25  # how stale a router's view of the sink's spend figures and acknowledgements may be


def register_router(
    app: faust.App,
    topics: RouterTopics,
    policy: RoutingPolicy,
    router: RouterSettings,
    kafka: KafkaSettings,
    spend: SpendFeed | None = None,
) -> BatchRouter | None:
    """engine "batch" (default): BatchRouter as a task of this app; "agent": a Faust agent over the stream.
    Either reads the routed-jobs record (and, with budgets, the spend topic) back before routing."""
    if router.engine == "batch":
        engine = BatchRouter(kafka, policy, group_id=app.conf.id, batch_max=router.batch_max, spend=spend)
        # Faust's own consumer and producer stay off: the engine brings its own (same group id as the agent's).
        app.boot_strategy = BootStrategy(app, enable_kafka_consumer=False, enable_kafka_producer=False)

        @app.task
        async def route_batches() -> None:
            await engine.run()

        return engine

    routed_jobs_read = register_routed_jobs(app, policy, kafka, spend)

    @app.agent(topics.jobs, name="router")
    async def route(stream: faust.StreamT) -> None:
        async for events in stream.take_events(router.batch_max, within=BATCH_WITHIN_S):
            await routed_jobs_read.wait()
            await route_batch(app, policy, events)

    return None


def register_routed_jobs(
    app: faust.App, policy: RoutingPolicy, kafka: KafkaSettings, spend: SpendFeed | None
) -> asyncio.Event:
    """Agent engine: the routed-jobs record is read back at every assignment, before the agent routes again."""
    read = asyncio.Event()
    if policy.admission.routed is None:
        read.set()
        return read
    feed = RoutedJobsFeed(kafka, policy.admission.routed)

    @app.on_partitions_revoked.connect
    async def unread(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        read.clear()

    @app.on_partitions_assigned.connect
    async def read_back(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await feed.catch_up()
        if spend is not None:
            await spend.catch_up()
        read.set()

    return read


async def route_batch(app: faust.App, policy: RoutingPolicy, events: list[faust.EventT]) -> None:
    producer, started = app.producer, time.perf_counter()
    for event in events:
        message = event.message
        source = Source(message.topic, message.partition, message.offset, signature_header(message.headers))
        outgoing = policy.route(message.value, source)
        try:
            await producer.send(
                outgoing.topic, outgoing.key, outgoing.value, partition=None, timestamp=None, headers=None
            )
            if outgoing.shadow is not None:
                shadow = outgoing.shadow
                await producer.send(
                    shadow.topic, shadow.key, shadow.value, partition=None, timestamp=None, headers=None
                )
        except Exception as exc:
            crash_without_commit(exc, message)
    for record in policy.routed_records():
        try:
            await producer.send(
                record.topic, record.key, record.value, partition=None, timestamp=None, headers=None
            )
        except Exception as exc:
            crash_without_commit(exc, events[-1].message)
    ROUTE_BATCH_SECONDS.observe(time.perf_counter() - started)


def register_novelty_state(app: faust.App, policy: RoutingPolicy, path: Path, save_interval_s: float) -> None:
    """Centroids survive restarts: loaded at start, saved periodically and when the router stops (and read by
    `route --explain`)."""
    if policy.novelty.load(path):
        log.info("novelty centroids loaded from %s", path)

    @app.timer(save_interval_s)
    async def save_novelty() -> None:
        policy.save_novelty(path)

    @app.on_before_shutdown.connect
    async def save_novelty_at_shutdown(sender: object, **_: object) -> None:
        policy.save_novelty(path)  # synchronous: no batch is routed (or learned from) while it writes
        log.info("novelty centroids saved to %s", path)


def register_budget_feed(app: faust.App, spend: SpendFeed | None) -> None:
    """Every router reads the whole (compacted) spend topic, group-less, so it knows every tenant's spend and
    which of its own reservations the sink now counts (modelyard/core/budgets.py)."""
    if spend is None:
        return

    @app.timer(SPEND_POLL_S)
    async def read_spend() -> None:
        try:
            await spend.poll()
        except BrokerError as exc:  # the next tick tries again; budgets keep the last figures meanwhile
            log.warning("spend topic not read: %r", exc)


def register_health(app: faust.App, metrics: MetricsSettings, engine: BatchRouter | None) -> None:
    """/metrics, /healthz and /readyz in Faust's own loop; ready once started and consuming (the batch engine's
    consumer started; the agent's Faust consumer not rebalancing)."""
    if not metrics.port:
        return
    started = False

    @app.task
    async def serve_health() -> None:
        nonlocal started
        consuming = (lambda: engine.assigned) if engine is not None else (lambda: not app.rebalancing)
        await start_health_server(metrics, Health(ready=lambda: started and consuming()))
        started = True
