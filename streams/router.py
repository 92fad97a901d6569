"""The router: every record on the jobs topic becomes exactly one record on a pool or dead-letter topic.

The process is a Faust app (worker, timers, health). Two engines route with the same RoutingPolicy:
"batch" (default, streams/batch_router.py) moves whole fetches; "agent" is a Faust agent in which events are
taken in batches (take_events), each value is decoded once, and outputs go straight to
Faust's producer without awaiting each delivery. Faust flushes its producer before it commits offsets, and
take_events acks a batch only after the loop body has run, so a committed offset always has its output
durable in Kafka (at-least-once; downstream dedups on job_id/attempt).
"""

from __future__ import annotations

import logging
import time

import faust
from aiokafka import AIOKafkaConsumer
from faust.app.base import BootStrategy

from modelyard.core.observability import ROUTE_BATCH_SECONDS, Health, start_health_server
from modelyard.core.settings import Settings
from modelyard.core.signatures import signature_header
from streams.app import create_app
from streams.batch_router import BatchRouter, crash_without_commit
from streams.policy import RoutingPolicy, Source
from streams.topics import RouterTopics

log = logging.getLogger("modelyard.router")
BATCH_WITHIN_S = 0.05


def register_router(
    app: faust.App, topics: RouterTopics, policy: RoutingPolicy, settings: Settings
) -> BatchRouter | None:
    """engine "batch" (default): BatchRouter as a task of this app; "agent": a Faust agent over the stream."""
    if settings.router.engine == "batch":
        engine = BatchRouter(settings, policy, group_id=app.conf.id)
        # Faust's own consumer and producer stay off: the engine brings its own (same group id as the agent's).
        app.boot_strategy = BootStrategy(app, enable_kafka_consumer=False, enable_kafka_producer=False)

        @app.task
        async def route_batches() -> None:
            await engine.run()

        return engine

    @app.agent(topics.jobs, name="router")
    async def route(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.router.batch_max, within=BATCH_WITHIN_S):
            await route_batch(app, policy, events)

    return None


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
    ROUTE_BATCH_SECONDS.observe(time.perf_counter() - started)


def register_novelty_state(app: faust.App, policy: RoutingPolicy, settings: Settings) -> None:
    """Centroids survive restarts: loaded at start, saved periodically and when the router stops (and read by
    `route --explain`)."""
    path = settings.novelty_state_file
    if policy.novelty.load(path):
        log.info("novelty centroids loaded from %s", path)

    @app.timer(settings.router.novelty_save_interval_s)
    async def save_novelty() -> None:
        policy.save_novelty(path)

    @app.on_before_shutdown.connect
    async def save_novelty_at_shutdown(sender: object, **_: object) -> None:
        policy.save_novelty(path)  # synchronous: no batch is routed (or learned from) while it writes
        log.info("novelty centroids saved to %s", path)


def register_budget_feed(app: faust.App, policy: RoutingPolicy, settings: Settings) -> None:
    """Every router reads the whole (compacted) spend topic, group-less, so it knows every tenant's spend."""
    if not settings.costs.budgets:
        return
    state: dict[str, AIOKafkaConsumer] = {}

    @app.timer(1.0)
    async def read_spend() -> None:
        if "consumer" not in state:
            state["consumer"] = AIOKafkaConsumer(
                settings.kafka.spend_topic,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                **settings.kafka.client_options(),
            )
            await state["consumer"].start()
        for records in (await state["consumer"].getmany(timeout_ms=0)).values():
            for record in records:
                policy.budgets.record(record.value)


def register_health(app: faust.App, settings: Settings, engine: BatchRouter | None) -> None:
    """/metrics, /healthz and /readyz in Faust's own loop; ready once started and consuming (the batch engine's
    consumer started; the agent's Faust consumer not rebalancing)."""
    if not settings.metrics.port:
        return
    started = False

    @app.task
    async def serve_health() -> None:
        nonlocal started
        consuming = (lambda: engine.assigned) if engine is not None else (lambda: not app.rebalancing)
        await start_health_server(settings.metrics, Health(ready=lambda: started and consuming()))
        started = True


def build_router(settings: Settings) -> faust.App:
    app = create_app(settings)
    policy = RoutingPolicy(settings)
    engine = register_router(app, RouterTopics.declare(app, settings), policy, settings)
    register_novelty_state(app, policy, settings)
    register_budget_feed(app, policy, settings)
    register_health(app, settings, engine)
    return app
