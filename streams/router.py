"""The router agent: every record on the jobs topic becomes exactly one record on a pool or dead-letter topic.

Sends are not awaited one by one: Faust flushes its producer before it commits offsets, so a committed
offset always has its output durable in Kafka (at-least-once; downstream dedups on job_id/attempt).
"""

from __future__ import annotations

import faust

from modelyard.settings import Settings
from streams.app import create_app
from streams.policy import RoutingPolicy, Source
from streams.topics import RouterTopics


def register_router(app: faust.App, topics: RouterTopics, policy: RoutingPolicy) -> faust.types.AgentT:
    @app.agent(topics.jobs, name="router")
    async def route(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            source = Source(message.topic, message.partition, message.offset)
            outgoing = policy.route(message.value, source)
            await topics.outputs[outgoing.topic].send(key=outgoing.key, value=outgoing.value)

    return route


def build_router(settings: Settings) -> faust.App:
    app = create_app(settings)
    register_router(app, RouterTopics.declare(app, settings), RoutingPolicy(settings))
    return app
