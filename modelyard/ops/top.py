"""`modelyard top`: a live view of the running pipeline, refreshed every second.

Per pool: calls in flight, items/s, p50/p95 call latency (over the last 10 s; since start when idle), errors,
consumer lag. The router's and the sink's rates and lags. Spend and savings today (UTC) per pool, from the
ledger's per-job savings (v_savings) through the analyst door (the sink's query server while it runs), read
every 10 s. Dead letters today by stage and
reason, read from the dead-letter topic itself (so letters from `submit` count too).

Rates and latencies come from the processes' Prometheus endpoints; lag from Kafka's committed offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from modelyard.client.results import Following
from modelyard.core._exceptions import ModelyardError
from modelyard.core.settings import ClickHouseSettings, Settings
from modelyard.ops.pipeline_metrics import LagReader, Scrape, bucket_delta, quantile, rate, scrape
from schemas import DeadLetter
from schemas.decoding import decode

LATENCY_WINDOW_S = 10.0
SPEND_EVERY_S = 10.0
# per-job savings (v_savings, as `modelyard costs` books them): an escalated SLM attempt counts against its pool
SPEND_SQL = """
SELECT pool, sum(attempts) AS attempts, sum(cost_usd) AS cost_usd, sum(savings_usd) AS savings_usd
FROM v_savings WHERE day = toDate(now('UTC')) GROUP BY pool ORDER BY pool
"""


@dataclass
class PoolRow:
    pool: str
    in_flight: float
    per_second: float
    p50_ms: float | None
    p95_ms: float | None
    errors: float
    lag: int | None


@dataclass
class Frame:
    at: datetime
    pools: list[PoolRow]
    rates: dict[str, float]  # router routed/s, sink results/s
    lags: dict[str, int | None]
    spend: list[tuple[str, int, float, float]] = field(default_factory=list)
    spend_error: str | None = None
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)
    silent: list[str] = field(default_factory=list)  # endpoints that did not answer


class TopSource:
    """Keeps what a frame needs between frames: the last scrapes (for rates), a latency window, the lag
    reader, the dead-letter count so far, the spend last read."""

    def __init__(self, settings: Settings, endpoints: dict[str, str]) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.previous: tuple[float, Scrape] | None = None
        self.window: deque[tuple[float, Scrape]] = deque()
        self.letters: Counter[tuple[str, str]] = Counter()
        self.spend: tuple[float, list[tuple[str, int, float, float]], str | None] = (0.0, [], None)
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.lag_reader = LagReader(settings)
        self.dead_letter_topic = Following(settings.kafka, [settings.kafka.dead_letter_topic], midnight)

    async def __aenter__(self) -> TopSource:
        await self.lag_reader.__aenter__()
        await self.dead_letter_topic.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dead_letter_topic.__aexit__()
        await self.lag_reader.close()

    async def frame(self) -> Frame:
        now = time.monotonic()
        scrapes = await asyncio.gather(*[asyncio.to_thread(scrape, url) for url in self.endpoints.values()])
        merged = Scrape()
        for one in scrapes:
            merged = merged.merged(one)
        lags = await self.lag_reader.lags()
        await self._count_letters()
        await self._refresh_spend(now)
        frame = self._build(now, merged, lags)
        frame.silent = [name for name, one in zip(self.endpoints, scrapes, strict=True) if not one.answered]
        self.previous = (now, merged)
        self.window.append((now, merged))
        while now - self.window[0][0] > LATENCY_WINDOW_S:
            self.window.popleft()
        return frame

    def _build(self, now: float, current: Scrape, lags: dict[str, int | None]) -> Frame:
        then, before = self.previous or (now, current)
        seconds = now - then
        oldest = self.window[0][1] if self.window else current
        pools = []
        for pool in self.settings.pools:
            latest = current.buckets("modelyard_pool_call_seconds", pool=pool)
            recent = bucket_delta(oldest.buckets("modelyard_pool_call_seconds", pool=pool), latest)
            buckets = recent if any(recent.values()) else latest
            pools.append(
                PoolRow(
                    pool=pool,
                    in_flight=current.total("modelyard_pool_in_flight", pool=pool),
                    per_second=rate(
                        before.total("modelyard_pool_jobs_total", pool=pool),
                        current.total("modelyard_pool_jobs_total", pool=pool),
                        seconds,
                    ),
                    p50_ms=_ms(quantile(buckets, 0.5)),
                    p95_ms=_ms(quantile(buckets, 0.95)),
                    errors=current.total("modelyard_pool_jobs_total", pool=pool, status="error"),
                    lag=lags.get(f"{self.settings.app_id}.pool.{pool}"),
                )
            )
        rates = {
            name: rate(before.total(metric), current.total(metric), seconds)
            for name, metric in (
                ("router", "modelyard_router_routed_total"),
                ("sink", "modelyard_sink_results_total"),
            )
        }
        _, spend, spend_error = self.spend
        return Frame(datetime.now(UTC), pools, rates, lags, spend, spend_error, Counter(self.letters))

    async def _count_letters(self) -> None:
        for _, value in await self.dead_letter_topic.batch(timeout_ms=0):
            letter = decode(DeadLetter, value)
            if isinstance(letter, DeadLetter):
                self.letters[(letter.stage or "-", letter.reason)] += 1

    async def _refresh_spend(self, now: float) -> None:
        if self.spend[0] and now - self.spend[0] < SPEND_EVERY_S:
            return
        try:
            rows = await asyncio.to_thread(read_spend, self.settings.clickhouse)
            self.spend = (now, rows, None)
        except ModelyardError as exc:
            self.spend = (now, [], exc.one_line())


def read_spend(clickhouse: ClickHouseSettings) -> list[tuple[str, int, float, float]]:
    from workers.sink.analyst_store import open_analyst_store

    store = open_analyst_store(clickhouse)
    try:
        return [(str(p), int(n), float(c), float(s)) for p, n, c, s in store.query(SPEND_SQL)]
    finally:
        store.close()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def render(frame: Frame, app: str) -> Group:
    """app: the app_id, which names the consumer groups."""
    pools = Table("pool", "in flight", "items/s", "p50 ms", "p95 ms", "errors", "lag", title="pools")
    for row in frame.pools:
        pools.add_row(
            row.pool,
            f"{row.in_flight:,.0f}",
            f"{row.per_second:,.1f}",
            _num(row.p50_ms),
            _num(row.p95_ms),
            f"[red]{row.errors:,.0f}[/red]" if row.errors else "0",
            _lag(row.lag),
        )
    stages = Table("process", "rate", "lag", title="router and sink")
    stages.add_row("router", f"{frame.rates['router']:,.1f} routed/s", _lag(frame.lags.get(f"{app}.router")))
    stages.add_row("sink", f"{frame.rates['sink']:,.1f} results/s", _lag(frame.lags.get(f"{app}.sink")))
    spend = Table("pool", "attempts", "spend USD", "savings USD", title="spend today (UTC)")
    for pool, attempts, cost, savings in frame.spend:
        spend.add_row(pool, f"{attempts:,}", f"{cost:,.6f}", f"{savings:,.6f}")
    if len(frame.spend) > 1:
        spend.add_row(
            "total",
            f"{sum(r[1] for r in frame.spend):,}",
            f"{sum(r[2] for r in frame.spend):,.6f}",
            f"{sum(r[3] for r in frame.spend):,.6f}",
            style="bold",
        )
    letters = Table("stage", "reason", "letters", title="dead letters today")
    for (stage, reason), count in sorted(frame.dead_letters.items()):
        letters.add_row(stage, reason, f"{count:,}")
    notes = [f"modelyard top  {frame.at:%Y-%m-%d %H:%M:%S} UTC  (Ctrl-C quits)"]
    if frame.silent:
        notes.append(f"[red]no metrics from:[/red] {', '.join(frame.silent)}")
    if frame.spend_error:
        notes.append(f"[yellow]spend unknown:[/yellow] {frame.spend_error}")
    return Group(notes[0], pools, stages, spend, letters, *notes[1:])


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _lag(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


async def run_top(settings: Settings, endpoints: dict[str, str], console: Console, once: bool) -> None:
    """Refresh every second until Ctrl-C; `once`: print one frame (rates over its first second) and return."""
    async with TopSource(settings, endpoints) as source:
        await source.frame()  # the first sample: rates need two
        await asyncio.sleep(1.0)
        if once:
            console.print(render(await source.frame(), settings.app_id))
            return
        with Live(render(await source.frame(), settings.app_id), console=console, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                live.update(render(await source.frame(), settings.app_id), refresh=True)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
