"""The Faust router process against real Kafka: dead letters in a stream of valid items; crash and restart."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor
from schemas import Assignment, DeadLetter
from tests.helpers import BATTERY, produce

pytestmark = pytest.mark.integration


def valid(n: int, prefix: str = "ok") -> bytes:
    return orjson.dumps(
        {
            "job_id": f"{prefix}-{n}",
            "tenant": "acme",
            "input": f"ticket {n}",
            "params": {"labels": ["a", "b"]},
        }
    )


async def collect(
    settings: Settings, expected: int, timeout: float, stop_early: int | None = None
) -> list[tuple[str, bytes]]:
    """Output records until `expected` distinct ones (replays count once) or `stop_early` records arrived."""
    topics = [settings.kafka.pool_topic(p) for p in settings.pools] + [settings.kafka.dead_letter_topic]
    consumer = AIOKafkaConsumer(
        *topics,
        **settings.kafka.client_options(),
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    out: list[tuple[str, bytes]] = []
    distinct: set[bytes] = set()
    deadline = time.monotonic() + timeout
    try:
        while (
            time.monotonic() < deadline
            and len(out) < (stop_early or float("inf"))
            and len(distinct) < expected
        ):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out += [(r.topic, r.value) for r in records]
                distinct |= {r.key or r.value for r in records}
    finally:
        await consumer.stop()
    return out


def test_malformed_records_are_dead_lettered_while_valid_ones_around_them_route(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    values: list[bytes | None] = []
    for n, (raw, _, _) in enumerate(BATTERY):
        values += [valid(2 * n), raw, valid(2 * n + 1)]
    asyncio.run(produce(settings, values))
    with ProcessSupervisor(tmp_path / "logs", env=pipeline_env) as supervisor:
        supervisor.start("router", "router")
        out = asyncio.run(collect(settings, len(values), timeout=90))
    routed = [Assignment.model_validate_json(v) for t, v in out if t != settings.kafka.dead_letter_topic]
    letters = [DeadLetter.model_validate_json(v) for t, v in out if t == settings.kafka.dead_letter_topic]
    assert sorted(a.item.job_id for a in routed) == sorted(f"ok-{n}" for n in range(2 * len(BATTERY)))
    assert [(d.reason, d.field) for d in sorted(letters, key=lambda d: d.source_offset)] == [
        (r, f) for _, r, f in BATTERY
    ]
    assert [d.source_offset for d in sorted(letters, key=lambda d: d.source_offset)] == [
        3 * n + 1 for n in range(len(BATTERY))
    ]


@pytest.mark.parametrize("engine", ["batch", "agent"])
def test_router_killed_mid_stream_loses_nothing(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path, engine: str
) -> None:
    settings, total = pipeline_settings, 20_000
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    asyncio.run(produce(settings, [valid(n, "kill") for n in range(total)]))
    with ProcessSupervisor(
        tmp_path / "logs", env={**pipeline_env, "MODELYARD_ROUTER__ENGINE": engine}
    ) as supervisor:
        supervisor.start("router", "router")
        partial = asyncio.run(collect(settings, total, timeout=90, stop_early=2_000))
        supervisor.kill("router")
        assert 0 < len({v for _, v in partial}) < total, "the router should have been killed mid-stream"
        supervisor.start("router-restarted", "router")
        out = asyncio.run(collect(settings, total, timeout=180))
    job_ids = Counter(Assignment.model_validate_json(v).item.job_id for _, v in out)
    assert set(job_ids) == {f"kill-{n}" for n in range(total)}
    assert sum(job_ids.values()) - total < total  # replays after the kill are bounded by what was uncommitted


def test_with_tenant_keys_only_signed_jobs_route(
    pipeline_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`submit` signs with the key it holds; a record produced without a signature is dead-lettered."""
    from modelyard.core.settings import load_settings
    from modelyard.ops.submit import JobSubmitter

    env = {**pipeline_env, "MODELYARD_ROUTER__TENANT_KEYS": '{"acme": "acme-test-key"}'}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    lines = [(n, valid(n, "signed")) for n in range(5)]
    summary = asyncio.run(
        JobSubmitter(settings.kafka, settings.pools, settings.router.tenant_keys).submit_lines(
            lines, len(lines), source="test"
        )
    )
    asyncio.run(produce(settings, [valid(n, "unsigned") for n in range(3)]))
    assert summary.submitted == 5
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("router", "router")
        out = asyncio.run(collect(settings, 8, timeout=90))
    routed = sorted(
        Assignment.model_validate_json(v).item.job_id for t, v in out if t != settings.kafka.dead_letter_topic
    )
    letters = [DeadLetter.model_validate_json(v) for t, v in out if t == settings.kafka.dead_letter_topic]
    assert routed == [f"signed-{n}" for n in range(5)]
    assert sorted((d.reason, d.field) for d in letters) == [("unauthenticated", "tenant")] * 3
    assert all(b"acme-test-key" not in v for _, v in out)
