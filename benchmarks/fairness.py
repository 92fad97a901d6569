"""Tenant fairness inside a pool: a small tenant's items behind a big tenant's backlog, against the simulator.

The scenario of issue 16: a pool (`slm`, C calls in flight, P partitions) works for one tenant whose 20,000
items sit in its topic; another tenant then submits 200. How long do those 200 take, from their submission to
their Result, compared with the same 200 on an idle pool? The target is a p95 ratio within 2x.

Each run: a local Kafka broker (or --bootstrap), the provider simulator as its own process (latency L +-
jitter), one pool process (`PoolWorker`, as `modelyard pool slm` runs it). Steps:

1. warm-up: C items, so the group is joined and connections are up;
2. idle: the small tenant's 200 items on the idle pool; completion time = Result.completed_at - submission;
   `--bursts` (3) bursts one after the other, their latencies pooled;
3. backlog: the big tenant's 20,000 items are produced; once the pool is busy with them (2C results), the
   small tenant's bursts are submitted and timed the same way, while the backlog waits.

`--compare` runs the same scenario again with the read-ahead made a plain bounded window (no skipping: a
flow cap equal to the window, a scan limit of one window), i.e. a pool that reads its partitions in order,
for the side-by-side figure. Usage:

    .venv/bin/python benchmarks/fairness.py                 # table
    .venv/bin/python benchmarks/fairness.py --json          # one JSON object (p95_ratio among the figures)
    .venv/bin/python benchmarks/fairness.py --compare --backlog 20000 --small 200 --inflight 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pools import free_port, start_broker
from modelyard.app import POOL_YOUNG_OBJECTS, build_pool_worker, freeze_startup_heap
from modelyard.core.settings import SchedulingSettings, Settings
from modelyard.core.topics import assigned_partitions, ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port

console = Console(stderr=True)
LABELS = ["billing", "bug", "account", "other"]
BURSTS: dict[str, dict[str, list[float]]] = {}  # run -> phase -> each burst's p95 (ms)


@dataclass
class Figures:
    design: str
    p50_idle_ms: float
    p95_idle_ms: float
    p50_backlog_ms: float
    p95_backlog_ms: float
    big_done_before_small_finished: int
    wall_s: float
    reads_per_item: float  # records the pool read (re-reads included) per item it started
    rewinds: int
    drain_per_s: float | None = None  # with --drain: the big backlog's throughput to its end
    bursts_p95_ms: tuple[list[float], list[float]] = ([], [])  # each burst's p95: idle, under the backlog

    @property
    def p50_ratio(self) -> float:
        return self.p50_backlog_ms / self.p50_idle_ms

    @property
    def p95_ratio(self) -> float:
        return self.p95_backlog_ms / self.p95_idle_ms


def assignment_bytes(job_id: str, tenant: str, n: int, priority: int = 5) -> bytes:
    """An Assignment record as the router writes it (distinct inputs: nothing is cached)."""
    return orjson.dumps(
        {
            "item": {
                "job_id": job_id,
                "tenant": tenant,
                "task": "classification",
                "input": f"I was charged twice for order {n}, please refund ({tenant})",
                "params": {"labels": LABELS},
                "priority": priority,
            },
            "task_type": "classification",
            "task_reason": "hint",
            "pool": "slm",
            "rule": "bench",
            "reason": "bench",
            "input_tokens_est": 16,
            "routed_at": datetime.now(UTC),
        }
    )


def pool_process(settings: Settings, stop: ProcessEvent, stats: multiprocessing.Queue) -> None:
    asyncio.run(_pool_process(settings, stop, stats))


async def _pool_process(settings: Settings, stop: ProcessEvent, stats: multiprocessing.Queue) -> None:
    worker = build_pool_worker(settings, "slm")
    freeze_startup_heap(POOL_YOUNG_OBJECTS)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    while not stop.is_set() and not task.done():
        await asyncio.sleep(0.01)
    stopping.set()
    await task
    stats.put((worker.read_ahead.reads, worker.read_ahead.rewinds, worker.processed))


class Harness:
    """Produces assignments to the pool's topic and reads results, timing each job from its submission."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka.pool_topic("slm")
        self.submitted: dict[str, float] = {}
        self.finished: dict[str, float] = {}

    async def __aenter__(self) -> Harness:
        options = self.settings.kafka.client_options()
        self.producer = AIOKafkaProducer(**options, linger_ms=10, max_batch_size=512 * 1024)
        self.reader = AIOKafkaConsumer(
            self.settings.kafka.results_topic,
            **options,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self.producer.start()
        await self.reader.start()
        await assigned_partitions(self.reader)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reader.stop()
        await self.producer.stop()

    async def submit(self, records: list[tuple[str, bytes]]) -> None:
        sent = []
        at = time.time()
        for job_id, value in records:
            self.submitted[job_id] = at
            sent.append(await self.producer.send(self.topic, value, key=job_id.encode()))
        await asyncio.gather(*sent)

    async def collect(self) -> None:
        for records in (await self.reader.getmany(timeout_ms=100, max_records=10_000)).values():
            for record in records:
                result = orjson.loads(record.value)
                if result["status"] in ("ok", "error", "expired"):
                    done = datetime.fromisoformat(result["completed_at"]).timestamp()
                    self.finished[result["job_id"]] = done

    async def until_finished(
        self, job_ids: list[str], timeout: float, alive: multiprocessing.Process
    ) -> None:
        deadline = time.monotonic() + timeout
        while any(j not in self.finished for j in job_ids):
            if not alive.is_alive():
                raise RuntimeError(f"the pool process exited with {alive.exitcode}")
            if time.monotonic() > deadline:
                missing = sum(j not in self.finished for j in job_ids)
                raise TimeoutError(f"{missing} of {len(job_ids)} jobs unfinished after {timeout:.0f}s")
            await self.collect()

    def latencies_ms(self, job_ids: list[str]) -> list[float]:
        return [1000 * (self.finished[j] - self.submitted[j]) for j in job_ids]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run_design(base: Settings, design: str, args: argparse.Namespace) -> Figures:
    run = f"{design}{uuid.uuid4().hex[:6]}"
    settings = scenario_settings(base, run, design, args)
    await ensure_topics(settings.kafka, settings.pools)
    spawn = multiprocessing.get_context("spawn")
    stop, stats = spawn.Event(), spawn.Queue()
    pool = spawn.Process(target=pool_process, args=(settings, stop, stats), daemon=True)
    pool.start()
    started = time.monotonic()
    try:
        async with Harness(settings) as harness:
            warm = [
                (f"{run}-warm-{n}", assignment_bytes(f"{run}-warm-{n}", "warm", n))
                for n in range(args.inflight)
            ]
            await harness.submit(warm)
            await harness.until_finished([j for j, _ in warm], 120, pool)
            idle = await small_batch(harness, run, "idle", args, pool)
            big = [
                (f"{run}-big-{n}", assignment_bytes(f"{run}-big-{n}", "big", n)) for n in range(args.backlog)
            ]
            await harness.submit(big)
            while sum(j in harness.finished for j, _ in big) < 2 * args.inflight:
                await harness.collect()
            busy = await small_batch(harness, run, "busy", args, pool)
            big_done = sum(j in harness.finished for j, _ in big)
            drain_per_s = await drain(harness, [j for j, _ in big], args, pool) if args.drain else None
    finally:
        stop.set()
        reads, rewinds, processed = stats.get(timeout=120)
        pool.join(60)
    return Figures(
        design,
        percentile(idle, 50),
        percentile(idle, 95),
        percentile(busy, 50),
        percentile(busy, 95),
        big_done,
        time.monotonic() - started,
        reads / max(processed, 1),
        rewinds,
        drain_per_s,
        (BURSTS.get(run, {}).get("idle", []), BURSTS.get(run, {}).get("busy", [])),
    )


async def drain(
    harness: Harness, big: list[str], args: argparse.Namespace, pool: multiprocessing.Process
) -> float:
    """The rest of the backlog to its end: its throughput (items a second) from now."""
    left, started = sum(j not in harness.finished for j in big), time.monotonic()
    await harness.until_finished(big, args.timeout * 10, pool)
    return left / (time.monotonic() - started)


async def small_batch(
    harness: Harness, run: str, phase: str, args: argparse.Namespace, pool: multiprocessing.Process
) -> list[float]:
    """`--bursts` times, one after the other: the small tenant's items at once, each timed; all latencies."""
    latencies = []
    bursts = 1 if phase == "busy" and "window" in run else args.bursts  # in order, the backlog drains first
    for burst in range(bursts):
        jobs = [
            (f"{run}-{phase}{burst}-{n}", assignment_bytes(f"{run}-{phase}{burst}-{n}", "small", n))
            for n in range(args.small)
        ]
        await harness.submit(jobs)
        await harness.until_finished([j for j, _ in jobs], args.timeout, pool)
        latencies += harness.latencies_ms([j for j, _ in jobs])
        BURSTS.setdefault(run, {}).setdefault(phase, []).append(percentile(latencies[-len(jobs) :], 95))
    return latencies


def scenario_settings(base: Settings, run: str, design: str, args: argparse.Namespace) -> Settings:
    kafka = base.kafka.model_copy(update={"topic_prefix": run, "partitions": args.partitions})
    pools = {**base.pools, "slm": base.pools["slm"].model_copy(update={"concurrency": args.inflight})}
    scheduling = SchedulingSettings()
    if design == "window":  # a plain bounded read-ahead: no skipping, so the partitions are read in order
        window = 2 * args.inflight
        scheduling = SchedulingSettings(read_ahead=window, flow_cap=window, scan_limit=window)
    return base.model_copy(update={"app_id": run, "kafka": kafka, "pools": pools, "scheduling": scheduling})


def report(figures: list[Figures], args: argparse.Namespace) -> Table:
    table = Table(
        "read-ahead",
        "small p50 idle ms",
        "small p95 idle ms",
        "small p50 under backlog ms",
        "small p95 under backlog ms",
        "p50 ratio",
        "p95 ratio",
        "big items done meanwhile",
        "reads / item",
        "rewinds",
        "backlog items/s",
        title=(
            f"{args.small} small-tenant items behind a {args.backlog:,}-item backlog: pool of {args.inflight} in "
            f"flight, {args.partitions} partitions, simulator {args.latency_ms:g} +- {args.jitter_ms:g} ms"
        ),
    )
    for f in figures:
        table.add_row(
            f.design,
            f"{f.p50_idle_ms:,.0f}",
            f"{f.p95_idle_ms:,.0f}",
            f"{f.p50_backlog_ms:,.0f}",
            f"{f.p95_backlog_ms:,.0f}",
            f"{f.p50_ratio:.2f}x",
            f"{f.p95_ratio:.2f}x",
            f"{f.big_done_before_small_finished:,}",
            f"{f.reads_per_item:.2f}",
            f"{f.rewinds:,}",
            "-" if f.drain_per_s is None else f"{f.drain_per_s:,.0f}",
        )
    return table


def as_json(figures: list[Figures], runs: list[Figures], args: argparse.Namespace) -> str:
    main = figures[0]
    out = {
        "runs_p95_ratio": [round(r.p95_ratio, 3) for r in runs],
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(main).items()},
        "bursts_p95_ms": [[round(v, 1) for v in phase] for phase in main.bursts_p95_ms],
        "p50_ratio": round(main.p50_ratio, 3),
        "p95_ratio": round(main.p95_ratio, 3),
        "target_p95_ratio": 2.0,
        "backlog": args.backlog,
        "small": args.small,
        "inflight": args.inflight,
        "partitions": args.partitions,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
    }
    for other in figures[1:]:
        out[other.design] = {
            "p95_backlog_ms": round(other.p95_backlog_ms, 3),
            "p95_ratio": round(other.p95_ratio, 3),
        }
    return json.dumps(out)


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="modelyard-fairness-"))
    sim_port = free_port()
    broker = None
    try:
        if args.bootstrap:
            from benchmarks.pools import bench_settings

            base = bench_settings(data, args.bootstrap, sim_port)
        else:
            with console.status("starting Kafka..."):
                base, broker = start_broker(data, sim_port)
        base = base.model_copy(
            update={
                "simulator": base.simulator.model_copy(
                    update={"latency_ms": args.latency_ms, "jitter_ms": args.jitter_ms}
                )
            }
        )
        env = {
            "MODELYARD_SIMULATOR__PORT": str(sim_port),
            "MODELYARD_SIMULATOR__LATENCY_MS": str(args.latency_ms),
            "MODELYARD_SIMULATOR__JITTER_MS": str(args.jitter_ms),
            "MODELYARD_LOG_LEVEL": "WARNING",
        }
        figures = []
        with ProcessSupervisor(data / "logs", env=env) as supervisor:
            supervisor.start("simulator", "simulator")
            wait_for_port("127.0.0.1", sim_port, 30, supervisor)
            runs: list[Figures] = []
            for n in range(args.repeat):
                with console.status(f"fair, run {n + 1}/{args.repeat}: idle, then behind the backlog..."):
                    runs.append(await run_design(base, "fair", args))
            figures.append(sorted(runs, key=lambda f: f.p95_ratio)[len(runs) // 2])  # the median run
            if args.compare:
                with console.status("window: idle, then behind the backlog..."):
                    figures.append(await run_design(base, "window", args))
        if args.json:
            print(as_json(figures, runs, args))
        else:
            Console(width=160).print(report(figures, args))
            ratios = ", ".join(f"{r.p95_ratio:.2f}x" for r in runs)
            print(f"fair p95 ratio, run by run: {ratios} (the table shows the median run)")
            for r in runs:
                idle, busy = (", ".join(f"{v:,.0f}" for v in phase) for phase in r.bursts_p95_ms)
                print(
                    f"  run p95 {r.p95_ratio:.2f}x: bursts' p95 idle {idle} ms; under the backlog {busy} ms"
                )
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=20_000, help="the big tenant's items")
    parser.add_argument("--small", type=int, default=200, help="the small tenant's items")
    parser.add_argument("--inflight", type=int, default=64, help="the pool's concurrency")
    parser.add_argument(
        "--bursts", type=int, default=3, help="small-tenant bursts per phase, one after the other (pooled)"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--jitter-ms", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds the small tenant may take")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the fair design (the median is shown)")
    parser.add_argument("--compare", action="store_true", help="also run a plain bounded window (in order)")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="then run the backlog to its end (its throughput, reads per item)",
    )
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    asyncio.run(main(parser.parse_args()))
