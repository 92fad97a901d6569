"""Prometheus metrics and the HTTP endpoints every process kind serves when `metrics.port` is set:

  /metrics   Prometheus text format
  /healthz   200 while the process's event loop answers (liveness; a blocked loop times the probe out)
  /readyz    200 once the process consumes (Kafka reachable, topics exist, its consumer is running), 503 before
             that and while it drains on shutdown

Metric names start with `modelyard_`. Labels are low-cardinality only (pool, provider, model, stage, reason,
table); tenants and job ids never become labels.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import MetricsSettings

log = logging.getLogger("modelyard.observability")

CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# pools
POOL_IN_FLIGHT = Gauge("modelyard_pool_in_flight", "Model calls in flight.", ["pool"])
POOL_JOBS = Counter(
    "modelyard_pool_jobs_total",
    "Jobs a pool finished, by outcome (ok or error).",
    ["pool", "provider", "status"],
)
POOL_CALL_SECONDS = Histogram(
    "modelyard_pool_call_seconds",
    "Model call latency, SDK retries included.",
    ["pool", "provider"],
    buckets=CALL_BUCKETS,
)
POOL_EXPIRED = Counter(
    "modelyard_pool_expired_total", "Items ended as expired: their deadline passed before the call.", ["pool"]
)
POOL_WAITING = Gauge("modelyard_pool_waiting", "Items read ahead and waiting for a slot.", ["pool"])
POOL_SKIPPED = Gauge(
    "modelyard_pool_skipped",
    "Offsets read past and kept for a re-read (a tenant's backlog over its cap).",
    ["pool"],
)
RESULT_CACHE_LOOKUPS = Counter(
    "modelyard_result_cache_lookups_total",
    "Result-cache lookups of opted-in items, by outcome (hit, miss); hit rate = hit / (hit + miss).",
    ["pool", "outcome"],
)
RESULT_CACHE_ENTRIES = Gauge(
    "modelyard_result_cache_entries", "Entries this process holds of the result cache."
)
RESULT_CACHE_BYTES = Gauge("modelyard_result_cache_bytes", "Bytes this process holds of the result cache.")
# router
ROUTED = Counter("modelyard_router_routed_total", "Work items routed to a pool.", ["pool"])
ROUTE_BATCH_SECONDS = Histogram(
    "modelyard_router_batch_seconds", "Time to route one batch of records.", buckets=FAST_BUCKETS
)
# budgets (router, pools) and the calls the ledger bills more than once per attempt (sink)
BUDGET_REFUSALS = Counter(
    "modelyard_budget_refusals_total",
    "Calls to budgeted pools or targets not made: the tenant's spend and reservations reached its budget. "
    "stage: router (routed items), cascade (escalations), fallback (a pool's fallback target).",
    ["stage", "action"],
)
REPEAT_CALLS = Counter(
    "modelyard_sink_repeat_calls_total",
    "Provider calls billed for a job attempt that already had its result (a pool's redelivery after a crash, "
    "a reused job id): each is its own cost_ledger row, repeat_call = 1.",
    ["pool"],
)


@functools.cache
def routed_to(pool: str) -> Counter:
    """The router's per-pool counter, looked up once per pool (the hot path pays ~0.4 µs, not ~1.3 µs)."""
    return ROUTED.labels(pool)


# every stage that dead-letters
DEAD_LETTERS = Counter(
    "modelyard_dead_letters_total", "Records sent to the dead-letter topic.", ["stage", "reason"]
)
# sink
SINK_ROWS = Counter("modelyard_sink_rows_written_total", "Rows written to ClickHouse.", ["table"])
SINK_RESULTS = Counter(
    "modelyard_sink_results_total", "Results written, by pool and status.", ["pool", "status"]
)
SINK_FLUSH_SECONDS = Histogram(
    "modelyard_sink_flush_seconds", "Time to write one batch to ClickHouse.", buckets=CALL_BUCKETS
)
SINK_WRITE_FAILURES = Counter("modelyard_sink_write_failures_total", "Batches ClickHouse refused (retried).")
TOKENS = Counter(
    "modelyard_tokens_total",
    "Tokens billed, by kind (input, cached_input, cache_write, cache_write_1h, output, reasoning).",
    ["pool", "model", "kind"],
)
COST_USD = Counter("modelyard_cost_usd_total", "Cost in USD, priced by the sink.", ["pool", "model"])
UNPRICED_RESULTS = Counter(
    "modelyard_unpriced_results_total",
    "Results written whose model no price file covers (stored with priced = 0; `modelyard costs unpriced`).",
    ["provider", "model"],
)
# shadow agreement (the sink reads v_shadow_agreement); alert rules in infra/prometheus/alerts.yaml
SHADOW_AGREEMENT = Gauge(
    "modelyard_shadow_agreement",
    "Share of shadow-sampled items where the SLM answered as the frontier (shadow_alert.window_days).",
    ["task"],
)
SHADOW_PAIRS = Gauge("modelyard_shadow_pairs", "Shadow pairs behind modelyard_shadow_agreement.", ["task"])
SHADOW_AGREEMENT_LOW = Gauge(
    "modelyard_shadow_agreement_low",
    "1 while agreement is below shadow_alert.threshold over at least min_pairs pairs.",
    ["task"],
)
# consumers
CONSUMER_LAG = Gauge(
    "modelyard_consumer_lag",
    "Records not yet committed by this process's consumer group.",
    ["group", "topic", "partition"],
)


@dataclass
class Health:
    """What the probes answer. `ready` is asked on each /readyz request."""

    ready: Callable[[], bool] = lambda: False


class HealthServer:
    """aiohttp server in the process's own event loop, so /healthz answering proves the loop is not blocked."""

    def __init__(
        self, settings: MetricsSettings, health: Health, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.settings = settings
        self.health = health
        self.registry = registry
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        log.info(
            "metrics and probes on http://%s:%d (/metrics /healthz /readyz)",
            self.settings.host,
            self.settings.port,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self.health.ready()
        return web.Response(text="ready\n" if ready else "not ready\n", status=200 if ready else 503)


async def start_health_server(settings: MetricsSettings, health: Health) -> HealthServer | None:
    """The server, started; None when metrics are disabled (port 0)."""
    if not settings.port:
        return None
    server = HealthServer(settings, health)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        raise ConfigError(
            f"cannot serve metrics on {settings.host}:{settings.port}: {exc.strerror}",
            hint="set MODELYARD_METRICS__PORT to a free port, or 0 to turn the endpoints off",
        ) from exc
    return server


async def watch_lag(consumer: AIOKafkaConsumer, group: str, interval_s: float) -> None:
    """Every interval, set CONSUMER_LAG for the partitions this process owns (end offset - committed offset).

    Each replica reports only its own partitions, so `sum by (group)` over replicas is the group's lag."""
    reported: set[tuple[str, str, str]] = set()
    while True:
        await asyncio.sleep(interval_s)
        try:
            lag = await partition_lag(consumer)
        except Exception as exc:
            log.debug("consumer lag not measured: %r", exc)
            continue
        current = {(group, tp.topic, str(tp.partition)): value for tp, value in lag.items()}
        for labels in reported - set(current):
            CONSUMER_LAG.remove(*labels)
        for labels, value in current.items():
            CONSUMER_LAG.labels(*labels).set(value)
        reported = set(current)


async def partition_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    assigned = list(consumer.assignment())
    if not assigned:
        return {}
    ends = await consumer.end_offsets(assigned)
    lag = {}
    for tp in assigned:
        committed = await consumer.committed(tp)
        lag[tp] = max(0, ends[tp] - (committed or 0))
    return lag
