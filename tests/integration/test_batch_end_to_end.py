"""Batch APIs end to end, every piece its own process: router -> frontier pool with batching on (Anthropic
Message Batches on the simulator) -> sink -> chDB. Deferrable jobs are billed at half the list price."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import Usage
from tests.helpers import produce, read_topic, rows, wait_for_sink
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
BATCH_ENV = {
    "MODELYARD_POOLS__FRONTIER__BATCH__ENABLED": "true",
    "MODELYARD_POOLS__FRONTIER__BATCH__MAX_WAIT_S": "1",
    "MODELYARD_POOLS__FRONTIER__BATCH__POLL_INTERVAL_S": "0.3",
    "MODELYARD_POOLS__FRONTIER__BATCH__POLL_MAX_INTERVAL_S": "1",
    "MODELYARD_SIMULATOR__BATCH_DELAY_S": "1",
}


def work(
    job_id: str, deadline_in: timedelta | None = None, text: str = "Write a limerick about invoices"
) -> bytes:
    job = {"job_id": job_id, "tenant": "acme", "task": "generation", "input": f"{text} ({job_id})"}
    if deadline_in:
        job["deadline"] = (datetime.now(UTC) + deadline_in).isoformat()
    return orjson.dumps(job)


async def set_faults(settings: Settings, **faults: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{settings.simulator.url}/_sim/faults", json=faults) as response,
    ):
        assert response.status == 200


def test_deferrable_jobs_are_batched_once_at_half_price_and_the_rest_stay_interactive(
    pipeline_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = pipeline_env | BATCH_ENV
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    deferrable = [f"d-{n}" for n in range(20)] + ["far-deadline"]
    urgent = [f"u-{n}" for n in range(10)]
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        asyncio.run(set_faults(settings, batch_error_marker="[batch-fail]"))
        for name, *args in [("sink", "sink"), ("router", "router"), ("pool-frontier", "pool", "frontier")]:
            supervisor.start(name, *args)
        jobs = [work(j) for j in deferrable[:-1]] + [work("far-deadline", timedelta(days=3))]
        jobs += [work(j, timedelta(hours=1)) for j in urgent] + [
            work("fails-in-batch", text="[batch-fail] a poem")
        ]
        asyncio.run(produce(settings, jobs))
        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, len(jobs) + 1, timeout=120))
        assert len(results) == len(jobs) + 1, supervisor.tail("pool-frontier", 20)
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")

    billed = rows(
        env,
        """
        SELECT r.job_id AS job_id, r.attempt AS attempt, r.status AS status, r.batch AS batch, r.model AS model,
               r.error AS error, r.input_tokens AS input, r.cached_input_tokens AS cached, r.cache_write_tokens AS writes,
               r.output_tokens AS output, r.completed_at AS at, c.total_cost_usd AS usd, c.batch AS ledger_batch
        FROM results AS r FINAL JOIN cost_ledger AS c FINAL ON r.job_id = c.job_id AND r.attempt = c.attempt
        ORDER BY job_id, attempt""",
    )
    by_job: dict[str, list[dict[str, object]]] = {}
    for row in billed:
        by_job.setdefault(str(row["job_id"]), []).append(row)
    assert set(by_job) == set(deferrable) | set(urgent) | {"fails-in-batch"}

    catalog = PriceCatalog.load()
    for job_id in deferrable + urgent:
        (row,) = by_job[job_id]  # exactly one result and one cost row
        batched = job_id in deferrable
        assert (row["status"], row["batch"], row["ledger_batch"]) == ("ok", int(batched), int(batched)), row
        list_price = interactive_cost(catalog, row)
        assert list_price > 0
        expected = list_price / 2 if batched else list_price
        assert abs(Decimal(str(row["usd"])) - expected) <= Decimal("1e-11"), (row, list_price)

    in_batch, interactive = by_job[
        "fails-in-batch"
    ]  # the per-request error is accounted, then retried interactively
    assert (in_batch["attempt"], in_batch["status"], in_batch["batch"], Decimal(str(in_batch["usd"]))) == (
        1,
        "failed_over",
        1,
        0,
    )
    assert "HTTP 500" in str(in_batch["error"]) or "api_error" in str(in_batch["error"])
    assert (interactive["attempt"], interactive["status"], interactive["batch"]) == (2, "ok", 0)


def interactive_cost(catalog: PriceCatalog, row: dict[str, object]) -> Decimal:
    """What the same tokens cost through the interactive API, from the price catalog."""
    usage = Usage(
        input_tokens=int(row["input"]),
        cached_input_tokens=int(row["cached"]),  # type: ignore[arg-type]
        cache_write_tokens=int(row["writes"]),
        output_tokens=int(row["output"]),
    )  # type: ignore[arg-type]
    at = datetime.fromisoformat(str(row["at"])).replace(tzinfo=UTC)
    rates = catalog.rates(str(row["model"]), at)
    assert rates is not None and rates.batch_discount == Decimal("0.50")
    return sum(rates.charge(usage, batch=False), Decimal(0))
