"""Soak: the whole pipeline under a steady job rate for a while; does any process's memory keep growing?

Starts a local broker (or uses MODELYARD_KAFKA__BOOTSTRAP_SERVERS with --external-kafka), the simulator, the
sink, the router and every pool, each with its own metrics port; submits `--rate` jobs a second for
`--minutes`; every `--sample-s` it reads each process's `process_resident_memory_bytes` from its /metrics.
After the warm-up (the first quarter) it fits a line through each process's RSS and fails (exit 1) when any
grows faster than `--max-growth-mb-per-min`. Usage:

    .venv/bin/python benchmarks/soak.py --minutes 10 --rate 200
    .venv/bin/python benchmarks/soak.py --minutes 11 --rate 1400 --burst-x 10 --burst-s 20 --drain-s 900  # ~1.2M jobs
    .venv/bin/python benchmarks/soak.py --chaos --brokers 3 --minutes 10 --rate 500 --drain-s 600

With --chaos, every --chaos-every-s (60) one process picked at random (the router, a pool, the sink, or, with
--brokers 3, a broker) is killed with SIGKILL and restarted; after the drain the sink is stopped and the
ClickHouse tables are counted: every submitted job must have exactly one final result, one result row and one
cost row per attempt, and the same USD with and without FINAL (no double billing). The table of kills and
the totals are printed; exit 1 when a total is off or memory grows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics, group_lag, sink_topics
from modelyard.local.broker import LocalKafkaBroker, port_is_open
from modelyard.local.demo import sample_lines
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import WorkItem
from schemas.decoding import decode

console = Console(stderr=True)
# The submitting producer retries through broker kills on its own; its per-request warnings would drown the tables.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
RSS = re.compile(rb"^process_resident_memory_bytes (\S+)$", re.M)


def rss_mb(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            found = RSS.search(response.read())
    except OSError:
        return None
    return float(found.group(1)) / 2**20 if found else None


def counter_total(port: int, name: str) -> float:
    """Sum of a counter's samples (all label sets) on a process's /metrics; 0 when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name}{{", f"{name} "))
    )


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / var if var else 0.0


def jobs_due(elapsed: float, rate: float, burst: tuple[float, float, float]) -> int:
    """Jobs to have sent by `elapsed`: `rate` a second, times `factor` inside the burst window [start, end)."""
    start, end, factor = burst
    in_burst = max(0.0, min(elapsed, end) - start)
    return int(rate * elapsed + (factor - 1) * rate * in_burst)


async def submit_steadily(
    settings: Settings, rate: float, seconds: float, burst: tuple[float, float, float] = (0, 0, 1)
) -> int:
    """Fresh job ids at `rate` a second (never duplicates, so the router's dedup window fills as in production),
    `burst` = (start s, end s, factor) multiplies the rate for a while."""
    templates = [
        orjson.loads(raw) for _, raw in sample_lines("soak") if isinstance(decode(WorkItem, raw), WorkItem)
    ]
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=10)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = jobs_due(elapsed, rate, burst) - sent
            for _ in range(due):
                job = dict(templates[sent % len(templates)], job_id=f"soak-{uuid.uuid4().hex[:12]}")
                await producer.send(
                    settings.kafka.jobs_topic, value=orjson.dumps(job), key=job["job_id"].encode()
                )
                sent += 1
            await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def sample_while(
    ports: dict[str, int], every: float, stop: asyncio.Event
) -> dict[str, list[tuple[float, float]]]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ports}
    started = time.monotonic()
    while not stop.is_set():
        for name, port in ports.items():
            value = await asyncio.to_thread(rss_mb, port)
            if value is not None:
                samples[name].append((time.monotonic() - started, value))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return samples


async def soak(
    settings: Settings, ports: dict[str, int], args: argparse.Namespace, chaos: Chaos | None = None
) -> tuple[int, dict[str, list[tuple[float, float]]]]:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_while(ports, args.sample_s, stop))
    monkey = asyncio.create_task(chaos.run(stop)) if chaos else None
    try:
        start = args.minutes * 60 * args.burst_at
        burst = (start, start + args.burst_s, args.burst_x)
        sent = await submit_steadily(settings, args.rate, args.minutes * 60, burst)
        console.print(
            f"submitted {sent:,} jobs; draining (up to {args.drain_s:g} s) while memory is still sampled"
        )
        if monkey:
            stop.set()
            await monkey
            await drain_by_lag(settings, args.drain_s)
        else:
            await drain(ports["sink"], sent, args.drain_s)
    finally:
        stop.set()
    return sent, await sampler


class Chaos:
    """Every `every_s`, SIGKILL one process picked at random and restart it (same name, same metrics port)."""

    def __init__(
        self,
        supervisor: ProcessSupervisor,
        kinds: dict[str, list[str]],
        ports: dict[str, int],
        broker: LocalKafkaBroker | None,
        every_s: float,
        seed: int,
    ) -> None:
        self.supervisor, self.kinds, self.ports, self.broker = supervisor, kinds, ports, broker
        self.every_s = every_s
        self.rng = __import__("random").Random(seed)
        self.kills: list[tuple[float, str, float]] = []  # (at s, what, restart took s)
        self.started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
                return
            victim = self.rng.choice(self.victims())
            began = time.monotonic()
            await asyncio.to_thread(self.kill_and_restart, victim)
            self.kills.append((began - self.started, victim, time.monotonic() - began))
            console.print(f"chaos: {victim} killed and restarted at {began - self.started:.0f} s")

    def victims(self) -> list[str]:
        names = list(self.kinds)
        if self.broker is not None and len(self.broker.nodes) > 1:
            names += [f"broker-{node}" for node in self.broker.nodes]
        return names

    def kill_and_restart(self, victim: str) -> None:
        if victim.startswith("broker-"):
            node = int(victim.removeprefix("broker-"))
            self.broker.kill_node(node)  # type: ignore[union-attr]
            self.broker.start_node(node)  # type: ignore[union-attr]
            return
        name = next(n for n in self.supervisor.children if n == victim or n.startswith(f"{victim}@"))
        self.supervisor.kill(name)
        restarted = f"{victim}@{len(self.kills) + 1}"
        self.supervisor.start(
            restarted, *self.kinds[victim], env={"MODELYARD_METRICS__PORT": str(self.ports[victim])}
        )


async def drain_by_lag(settings: Settings, seconds: float) -> None:
    """Wait until the router, every pool and the sink have committed everything (process counters restart
    with their processes under chaos, so the sink's own count cannot tell)."""
    groups = [("router", [settings.kafka.jobs_topic]), ("sink", sink_topics(settings.kafka, settings.pools))]
    groups += [(f"pool.{p}", [settings.kafka.pool_topic(p)]) for p in settings.pools]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lags = [await _lag_or_none(settings, group, topics) for group, topics in groups]
        if all(lag == 0 for lag in lags):
            return
        await asyncio.sleep(5)


async def _lag_or_none(settings: Settings, group: str, topics: list[str]) -> int | None:
    try:
        return await group_lag(settings.kafka, settings.group_id(group), topics)
    except Exception:  # a broker restarting: ask again next round
        return None


def ledger_totals(settings: Settings) -> dict[str, float]:
    """What ClickHouse holds once the sink stopped: jobs, rows and keys, USD with and without FINAL."""
    from workers.sink.clickhouse import ClickHouseStore

    store = ClickHouseStore(settings.clickhouse)
    try:
        query = store.query
        results = query(
            "SELECT count(), uniqExact(job_id, attempt), uniqExact(job_id), "
            "countIf(status IN ('ok', 'error')) FROM results FINAL"
        )[0]
        raw_rows = query("SELECT count() FROM results")[0][0]
        ledger = query(
            "SELECT count(), uniqExact(job_id, attempt, call_id), countIf(repeat_call = 0), "
            "sum(total_cost_usd) FROM cost_ledger FINAL"
        )
        usd_raw = query("SELECT sum(total_cost_usd) FROM cost_ledger")[0][0]
    finally:
        store.close()
    rows, calls, kept, usd = ledger[0]
    return {
        "jobs with a result": results[2],
        "final results": results[3],
        "result rows (FINAL / raw)": f"{results[0]} / {raw_rows}",
        "cost rows / calls / repeat calls": f"{rows} / {calls} / {rows - kept}",
        "USD FINAL / raw": f"{float(usd):.6f} / {float(usd_raw):.6f}",
        "_ok": results[2] == results[3] and results[0] == results[1] == kept and rows == calls,
        "_jobs": results[2],
    }


async def drain(sink_port: int, sent: int, seconds: float) -> None:
    """Wait until the sink wrote a final result for every submitted job (or `seconds` passed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        written = await asyncio.to_thread(counter_total, sink_port, "modelyard_sink_results_total")
        if written >= sent:
            return
        await asyncio.sleep(5)


def report(samples: dict[str, list[tuple[float, float]]], steady_from_s: float, limit: float) -> bool:
    """Verdict on the slope from `steady_from_s` on: after the warm-up and, with a burst, after the burst has
    settled (a burst raises the high-water mark once; a leak keeps raising it)."""
    table = Table(
        "process",
        "RSS start MB",
        "RSS peak MB",
        "RSS end MB",
        f"MB/min from {steady_from_s:.0f} s",
        "verdict",
        title="memory",
    )
    ok = True
    for name, points in samples.items():
        growth = slope_per_min([(t, m) for t, m in points if t >= steady_from_s])
        bounded = growth <= limit
        ok &= bounded
        first, last = (points[0][1], points[-1][1]) if points else (0.0, 0.0)
        peak = max((m for _, m in points), default=0.0)
        table.add_row(
            name,
            f"{first:.1f}",
            f"{peak:.1f}",
            f"{last:.1f}",
            f"{growth:+.2f}",
            "bounded" if bounded else "[red]GROWING[/red]",
        )
    console.print(table)
    return ok


def steady_from(args: argparse.Namespace) -> float:
    """The warm-up (a quarter of the run), or the burst's end plus a minute when that is later."""
    warmup = args.minutes * 60 / 4
    if args.burst_s <= 0 or args.burst_x == 1:
        return warmup
    return max(warmup, args.minutes * 60 * args.burst_at + args.burst_s + 60)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs per second")
    parser.add_argument(
        "--burst-x", type=float, default=1.0, help="rate multiplier during the burst (e.g. 10)"
    )
    parser.add_argument("--burst-s", type=float, default=0.0, help="burst length in seconds")
    parser.add_argument("--burst-at", type=float, default=0.5, help="burst start, as a share of the run")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument(
        "--drain-s", type=float, default=0.0, help="after submitting, wait up to this long for the backlog"
    )
    parser.add_argument("--max-growth-mb-per-min", type=float, default=2.0)
    parser.add_argument(
        "--external-kafka", action="store_true", help="use MODELYARD_KAFKA__BOOTSTRAP_SERVERS as is"
    )
    parser.add_argument("--chaos", action="store_true", help="kill and restart a random process regularly")
    parser.add_argument("--chaos-every-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--brokers", type=int, default=1, help="local cluster nodes (3: replicated)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelyard-soak-"))
    run = uuid.uuid4().hex[:6]
    base = load_settings()
    broker = (
        None
        if args.external_kafka
        else LocalKafkaBroker(
            base.local_broker.model_copy(update={"data_dir": work / "kafka", "brokers": args.brokers}),
            base.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{_free_port(2 * args.brokers)}"}),
        )
    )
    bootstrap = base.kafka.bootstrap_servers if broker is None else broker.bootstrap_servers
    replicas = {} if args.brokers < 3 else {"REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2"}
    env = {
        **{f"MODELYARD_KAFKA__{k}": v for k, v in replicas.items()},
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "MODELYARD_KAFKA__TOPIC_PREFIX": f"soak{run}",
        "MODELYARD_APP_ID": f"soak-{run}",
        "MODELYARD_STATE_DIR": str(work / "state"),
        "MODELYARD_CLICKHOUSE__DSN": f"chdb://{work / 'chdb'}",
        "MODELYARD_SIMULATOR__PORT": str(_free_port()),
        "MODELYARD_METRICS__HOST": "127.0.0.1",
    }
    os.environ.update(env)
    settings = load_settings()
    if broker:
        broker.start()
    kinds = {"sink": ["sink"], "router": ["router"], **{f"pool-{p}": ["pool", p] for p in settings.pools}}
    ports = {name: _free_port() for name in kinds}
    try:
        asyncio.run(ensure_topics(settings.kafka, settings.pools))
        with ProcessSupervisor(work / "logs", env=env) as supervisor:
            supervisor.start("simulator", "simulator")
            wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
            for name, command in kinds.items():
                supervisor.start(name, *command, env={"MODELYARD_METRICS__PORT": str(ports[name])})
            for port in ports.values():
                wait_for_port("127.0.0.1", port, 60, supervisor)
            console.print(f"soaking {args.minutes} min at {args.rate:g} jobs/s; logs in {work / 'logs'}")
            chaos = (
                Chaos(supervisor, kinds, ports, broker, args.chaos_every_s, args.seed) if args.chaos else None
            )
            sent, samples = asyncio.run(soak(settings, ports, args, chaos))
            supervisor.check_alive()
            totals = {
                "routed (router)": counter_total(ports["router"], "modelyard_router_routed_total"),
                "results written (sink)": counter_total(ports["sink"], "modelyard_sink_results_total"),
                "dead letters (router)": counter_total(ports["router"], "modelyard_dead_letters_total"),
            }
        if chaos:
            return (
                0
                if chaos_report(chaos, sent, ledger_totals(settings))
                and report(samples, steady_from(args), args.max_growth_mb_per_min)
                else 1
            )
        console.print(f"submitted {sent:,} jobs; " + "; ".join(f"{k} {v:,.0f}" for k, v in totals.items()))
        (work / "rss.json").write_bytes(orjson.dumps(samples))
        console.print(f"RSS samples (seconds, MB) per process: {work / 'rss.json'}")
        return 0 if report(samples, steady_from(args), args.max_growth_mb_per_min) else 1
    finally:
        if broker:
            broker.stop()


def chaos_report(chaos: Chaos, sent: int, totals: dict[str, object]) -> bool:
    kills = Table("at", "killed and restarted", "restart took", title="chaos")
    for at, victim, took in chaos.kills:
        kills.add_row(f"{at:.0f} s", victim, f"{took:.1f} s")
    console.print(kills)
    table = Table("total", "value", title=f"ledger after the chaos run ({sent:,} jobs submitted)")
    for name, value in totals.items():
        if not name.startswith("_"):
            table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    return bool(totals["_ok"]) and totals["_jobs"] == sent


def _free_port(span: int = 2) -> int:
    """A free port whose next `span - 1` ports are free too (a local broker's controller takes port + 1)."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not any(port_is_open("127.0.0.1", port + i) for i in range(1, span)):
            return port


if __name__ == "__main__":
    sys.exit(main())
