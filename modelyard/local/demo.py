"""`modelyard demo`: the whole pipeline on one machine, from a bundled sample to a cost table read from ClickHouse."""

from __future__ import annotations

import asyncio
import operator
import time
from collections import Counter
from datetime import UTC, datetime
from functools import reduce
from importlib import resources
from numbers import Number

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from modelyard.core._exceptions import ProcessError
from modelyard.core.kafka import make_reader, started
from modelyard.core.progress import progress_bar
from modelyard.core.settings import Settings
from modelyard.core.topics import assigned_partitions, ensure_topics, group_lag, sink_topics
from modelyard.local.broker import LocalKafkaBroker
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from modelyard.local.stack import StackState
from modelyard.ops.submit import JobSubmitter, print_summary
from schemas import ResultStatus, TaskType

STALL_TIMEOUT_S = 180.0
FINAL_STATUSES = {status.value for status in ResultStatus if status.is_final}

COST_BY_POOL = """
SELECT r.pool, r.provider, r.model, count() AS results, countIf(r.status = 'ok') AS ok, countIf(r.cached = 1) AS cached,
       sum(c.input_tokens) AS input_tokens, sum(c.cached_input_tokens) AS cached_tokens,
       sum(c.output_tokens) AS output_tokens, sum(c.total_cost_usd) AS cost_usd, sum(c.job_savings_usd) AS savings_usd,
       quantile(0.5)(r.latency_ms) AS p50_ms, uniqExact(r.job_id) AS jobs
FROM results AS r FINAL
INNER JOIN v_attempt_savings AS c ON r.job_id = c.job_id AND r.attempt = c.attempt AND r.call_id = c.call_id
WHERE startsWith(r.job_id, {prefix:String})
GROUP BY r.pool, r.provider, r.model ORDER BY r.pool
"""
CACHE_BY_TASK = """
SELECT task_type AS task, tenant, uniqExact(job_id) AS jobs, countIf(cached = 1) AS cached,
       round(100 * cached / jobs, 1) AS hit_rate_pct, sum(total_cost_usd) AS cost_usd, sum(cache_saved_usd) AS cache_saved_usd
FROM cost_ledger FINAL
WHERE startsWith(job_id, {prefix:String})
GROUP BY task, tenant ORDER BY task, tenant
"""


def demo_env(settings: Settings) -> dict[str, str]:
    """The demo opts every task into the result cache (each tenant its own answers) unless a routing policy
    file or `router.cache` already says what to cache."""
    if settings.router.policy_file is not None or settings.router.cache.tasks:
        return {}
    return {"MODELYARD_ROUTER__CACHE__TASKS": orjson.dumps([t.value for t in TaskType]).decode()}


def sample_lines(run: str, limit: int | None = None) -> list[tuple[int, bytes]]:
    """The bundled sample with every job_id prefixed by the run, so reruns never collide."""
    text = resources.files("modelyard").joinpath("data/sample_jobs.jsonl").read_bytes()
    lines = []
    for number, raw in enumerate(text.splitlines()[:limit], start=1):
        lines.append((number, _prefixed(raw, run)))
    return lines


def _prefixed(raw: bytes, run: str) -> bytes:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if isinstance(data, dict) and isinstance(data.get("job_id"), str):
        data["job_id"] = f"{run}-{data['job_id']}"
        return orjson.dumps(data)
    return raw


class Demo:
    def __init__(self, settings: Settings, console: Console, limit: int | None = None) -> None:
        self.settings = settings
        self.console = console
        self.limit = limit
        self.run_id = "demo-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.supervisor = ProcessSupervisor(settings.logs_dir, env=demo_env(settings))
        self.broker = LocalKafkaBroker(settings.local_broker, settings.kafka)

    def run(self) -> None:
        stack = StackState.load(self.settings)
        if stack is not None and stack.supervisor_alive:
            raise ProcessError(
                "the local stack is up (`modelyard status`): the demo would start a second sink on its ClickHouse path",
                hint="send the sample to it (`modelyard submit modelyard/data/sample_jobs.jsonl`), or `modelyard down` first",
            )
        started_broker = False
        try:
            with self.console.status("starting Kafka (KRaft, local)..."):
                owner = self.broker.describe()
                started_broker = self.broker.start()
            where = "started" if started_broker else f"already running, {owner}: the demo uses it"
            self.console.print(f"Kafka at {self.settings.kafka.bootstrap_servers}: {where}", highlight=False)
            asyncio.run(self._pipeline())
            self.print_costs()
        finally:
            self.supervisor.stop_all()
            if started_broker:
                with self.console.status("stopping Kafka..."):
                    self.broker.stop()

    async def _pipeline(self) -> None:
        await ensure_topics(self.settings.kafka, self.settings.pools)
        self._start_processes()
        watcher = await self._watch_results()
        try:
            lines = sample_lines(self.run_id, self.limit)
            summary = await self._submitter().submit_lines(lines, len(lines), "bundled sample")
            print_summary(summary, self.console, limit=10)
            await self._await_results(watcher, summary.submitted)
        finally:
            await watcher.stop()
        await self._await_sink()
        self.supervisor.stop("sink")

    def _submitter(self) -> JobSubmitter:
        settings = self.settings
        return JobSubmitter(settings.kafka, settings.pools, settings.router.tenant_keys, self.console)

    def _start_processes(self) -> None:
        modes = {self.settings.pools[p].provider for p in self.settings.pools}
        for provider in sorted(modes):
            config = self.settings.providers[provider]
            where = {
                "endpoint": config.base_url,
                "hosted": "the real hosted API",
                "simulator": self.settings.simulator.url,
                "local": f"student models in {self.settings.models_dir}",
            }
            self.console.print(f"provider {provider}: {config.mode} ({where[config.mode]})")
        if any(self.settings.providers[p].mode == "simulator" for p in modes):
            self.supervisor.start("simulator", "simulator")
            sim = self.settings.simulator
            wait_for_port(sim.host, sim.port, 30, self.supervisor)
        self.supervisor.start("sink", "sink")
        self.supervisor.start("router", "router")
        for pool in self.settings.pools:
            self.supervisor.start(f"pool-{pool}", "pool", pool)
        self.console.print(
            f"started: {', '.join(self.supervisor.children)} (logs in {self.settings.logs_dir})"
        )

    async def _watch_results(self) -> AIOKafkaConsumer:
        """A group-less consumer positioned at the end of the results topic before anything is submitted."""
        kafka = self.settings.kafka
        consumer = make_reader(kafka, kafka.results_topic, offset_reset="latest")
        await started(consumer, kafka)
        for tp in await assigned_partitions(consumer):
            await consumer.position(tp)
        return consumer

    async def _await_results(self, consumer: AIOKafkaConsumer, expected: int) -> None:
        seen: set[str] = set()
        by_pool: Counter[str] = Counter()
        last_progress = time.monotonic()
        with progress_bar(self.console) as progress:
            task = progress.add_task("waiting for results", total=expected)
            while len(seen) < expected:
                self.supervisor.check_alive()
                if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise ProcessError(f"no result for {STALL_TIMEOUT_S:.0f}s ({len(seen)}/{expected} done)")
                batches = await consumer.getmany(timeout_ms=500)
                for record in (r for records in batches.values() for r in records):
                    result = orjson.loads(record.value)
                    if result["status"] not in FINAL_STATUSES:  # failed over or escalated: the job goes on
                        continue
                    if result["job_id"].startswith(self.run_id) and result["job_id"] not in seen:
                        seen.add(result["job_id"])
                        by_pool[result["pool"]] += 1
                        last_progress = time.monotonic()
                progress.update(task, completed=len(seen), description=f"results {dict(by_pool)}")

    async def _await_sink(self) -> None:
        with self.console.status("waiting for the sink to write every result to ClickHouse..."):
            deadline, kafka = time.monotonic() + STALL_TIMEOUT_S, self.settings.kafka
            group, topics = self.settings.group_id("sink"), sink_topics(kafka, self.settings.pools)
            while await group_lag(kafka, group, topics) > 0:
                self.supervisor.check_alive()
                if time.monotonic() > deadline:
                    raise ProcessError("the sink did not catch up with the results topic")
                await asyncio.sleep(0.5)

    def print_costs(self) -> None:
        from workers.sink.clickhouse import ClickHouseStore

        store = ClickHouseStore(self.settings.clickhouse)
        try:
            names, rows = store.query_with_names(COST_BY_POOL, {"prefix": self.run_id})
            cache_names, cache_rows = store.query_with_names(CACHE_BY_TASK, {"prefix": self.run_id})
        finally:
            store.close()
        self.console.print(
            cost_table(names, rows, f"run {self.run_id}: results and costs read back from ClickHouse")
        )
        self.console.print(cost_table(cache_names, cache_rows, "the result cache, per task and tenant"))
        self.console.print(cache_summary(cache_names, cache_rows))


def cache_summary(names: list[str], rows: list[tuple[object, ...]]) -> str:
    """One sentence: how many jobs the cache answered and what that saved, against what was spent."""
    column = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    jobs, cached = sum(column.get("jobs", [])), sum(column.get("cached", []))
    saved, spent = sum(column.get("cache_saved_usd", [])), sum(column.get("cost_usd", []))
    if not jobs:
        return "the result cache answered nothing (no job reached the ledger)"
    share = f" ({saved / (saved + spent):.0%} of what the run would have cost)" if saved + spent else ""
    return (
        f"the result cache answered {cached} of {jobs} jobs ({cached / jobs:.0%}) without a model call, billed "
        f"at zero: ${saved:,.6f} saved against the models that first answered them{share}"
    )


def cost_table(names: list[str], rows: list[tuple[object, ...]], title: str) -> Table:
    table = Table(*names, title=title)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    if len(rows) > 1:
        table.add_row(*(_cell(v) for v in _totals(names, rows)), style="bold")
    return table


def _totals(names: list[str], rows: list[tuple[object, ...]]) -> list[object]:
    """Sums of the additive columns; blanks for labels, latencies and rates."""
    totals: list[object] = []
    for i, name in enumerate(names):
        values = [r[i] for r in rows if r[i] is not None]
        additive = (
            bool(values) and isinstance(values[0], Number) and not name.endswith(("_ms", "_rate", "_pct"))
        )
        totals.append(reduce(operator.add, values) if additive else "")
    totals[0] = "total"
    return totals


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if hasattr(value, "quantize"):
        return f"${value:,.6f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
