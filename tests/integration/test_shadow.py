"""Shadow sampling end to end: a share of SLM items also answered by the frontier; agreement in ClickHouse."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import orjson
import pytest

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from tests.helpers import produce, read_topic, rows, wait_for_sink

pytestmark = pytest.mark.integration
JOBS = 120


def test_shadow_answers_and_agreement_view(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path
) -> None:
    env = {**pipeline_env, "MODELYARD_ROUTER__SHADOW_SHARE": "0.25"}
    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    items = [
        orjson.dumps(
            {
                "job_id": f"sh-{n}",
                "tenant": "acme",
                "input": f"ticket {n} charged twice",
                "params": {"labels": ["billing", "bug", "other"]},
            }
        )
        for n in range(JOBS)
    ]
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [
            ("sink", "sink"),
            ("router", "router"),
            ("pool-slm", "pool", "slm"),
            ("pool-frontier", "pool", "frontier"),
        ]:
            supervisor.start(name, *args)
        asyncio.run(produce(settings, items))
        sampled = sum(zlib.crc32(f"sh-{n}".encode()) % 10_000 < 2_500 for n in range(JOBS))
        results = [
            orjson.loads(v)
            for v in asyncio.run(
                read_topic(settings, settings.kafka.results_topic, JOBS + sampled, timeout=90)
            )
        ]
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")
    shadows = {r["job_id"].removeprefix("shadow:"): r for r in results if r["job_id"].startswith("shadow:")}
    originals = {r["job_id"]: r for r in results if not r["job_id"].startswith("shadow:")}
    assert (
        len(shadows) == sampled
        and 15 <= sampled <= 50
        and all(r["pool"] == "frontier" and r["tenant"] == "shadow" for r in shadows.values())
    )
    agree = sum(originals[j]["output"] == s["output"] for j, s in shadows.items()) / len(shadows)
    view = rows(
        env, "SELECT sum(pairs) AS n, sum(agreement * pairs) / sum(pairs) AS share FROM v_shadow_agreement"
    )[0]
    assert int(view["n"]) == len(shadows) and float(view["share"]) == pytest.approx(agree)
