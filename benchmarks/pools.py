"""Pool throughput against the Little's-law bound, and CPU time per request.

With a fixed provider latency L and C calls in flight, no pool can finish more than C / L requests a
second (Little's law). This measures how close modelyard gets, against the simulator at a fixed 50 ms
(jitter 0), in two scopes:

* backend: C coroutines calling the SLM pool's vLLM backend (a classification with structured output and
  logprobs) back to back, through the lean aiohttp client (the default) and through the real openai SDK;
* pool: a whole PoolWorker in this process (aiokafka consumer, Dispatcher with gate and breaker, model call,
  Result encoding, acks=all producer, offset commits) draining assignments pre-loaded on its topic. With
  `--processes N`, N pool processes in one consumer group (as a deployment scales a pool), C/N calls in
  flight each; their CPU is added up, so "core busy" can pass 100%.

CPU per request is `time.process_time()` of this process over the measured window, divided by requests.
The simulator runs as its own process (its CPU is reported apart: on a small machine it competes with the
pool for the same cores). Kafka is a local broker on a free port, started and stopped here. Usage:

    .venv/bin/python benchmarks/pools.py                    # 64, 256, 512 in flight; 20 latencies each
    .venv/bin/python benchmarks/pools.py --rounds 40 --inflight 64 512
    .venv/bin/python benchmarks/pools.py --scopes pool --clients lean --processes 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from ctypes import c_longlong
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.app import POOL_YOUNG_OBJECTS, build_backend, build_pool_worker, freeze_startup_heap
from modelyard.core._exceptions import BrokerError
from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.broker import LocalKafkaBroker
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from schemas import Assignment, TaskType, WorkItem
from workers.pools.pool import PoolWorker

console = Console(stderr=True)
LATENCY_MS = 50.0


@dataclass
class Measure:
    scope: str
    in_flight: int
    requests: int
    wall_s: float
    cpu_s: float
    sim_cpu_s: float

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s

    @property
    def bound(self) -> float:
        return self.in_flight / (LATENCY_MS / 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_broker_port() -> int:
    """A free port whose successor (the controller's) is free too."""
    while True:
        port = free_port()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port + 1)) != 0:
                return port


def process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def item(n: int) -> WorkItem:
    return WorkItem(
        job_id=f"b-{n}",
        tenant="bench",
        task="classification",
        input=f"I was charged twice, ticket {n}",
        params={"labels": ["billing", "bug", "other"]},
    )


def assignment(n: int, run: str) -> Assignment:
    return Assignment(
        item=item(n).model_copy(update={"job_id": f"{run}-{n}"}),
        task_type=TaskType.CLASSIFICATION,
        task_reason="bench",
        pool="slm",
        reason="bench",
        routed_at=datetime.now(UTC),
    )


async def bench_backend(base: Settings, in_flight: int, rounds: int, sim_pid: int) -> Measure:
    pools = {**base.pools, "slm": base.pools["slm"].model_copy(update={"concurrency": in_flight})}
    backend = build_backend(
        base.model_copy(update={"pools": pools}), "slm"
    )  # as many connections as calls in flight
    items = [item(n) for n in range(in_flight * rounds)]
    await asyncio.gather(
        *(backend.complete(i, TaskType.CLASSIFICATION) for i in items[:in_flight])
    )  # connections up
    freeze_startup_heap(POOL_YOUNG_OBJECTS)  # the collector set as in the pool process, at every level
    queue = iter(items)

    async def caller() -> None:
        for next_item in queue:
            await backend.complete(next_item, TaskType.CLASSIFICATION)

    sim_cpu, cpu, started = process_cpu_s(sim_pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await backend.close()
    return Measure(
        f"backend alone ({base.providers['vllm'].client})",
        in_flight,
        len(items),
        wall,
        cpu,
        process_cpu_s(sim_pid) - sim_cpu,
    )


def pool_settings(base: Settings, concurrency: int, processes: int = 1) -> tuple[Settings, str]:
    """Settings of one benchmark run: its own topics and consumer group; enough partitions for every process."""
    run = f"bp{uuid.uuid4().hex[:6]}"
    kafka = base.kafka.model_copy(
        update={"topic_prefix": run, "partitions": max(base.kafka.partitions, processes)}
    )
    pools = {**base.pools, "slm": base.pools["slm"].model_copy(update={"concurrency": concurrency})}
    return base.model_copy(update={"app_id": run, "kafka": kafka, "pools": pools}), run


async def bench_pool(base: Settings, in_flight: int, rounds: int, sim_pid: int) -> Measure:
    settings, run = pool_settings(base, in_flight)
    await ensure_topics(settings.kafka, settings.pools)
    total = in_flight * (rounds + 1)
    await preload(settings, [assignment(n, run) for n in range(total)])
    worker = build_pool_worker(settings, "slm")
    freeze_startup_heap(POOL_YOUNG_OBJECTS)  # as `modelyard pool` does before it starts consuming
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until_processed(worker, in_flight, task)  # group joined, connections up: steady state from here
    done, sim_cpu, cpu, started = (
        worker.processed,
        process_cpu_s(sim_pid),
        time.process_time(),
        time.perf_counter(),
    )
    await until_processed(worker, total, task)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    sim_cpu = process_cpu_s(sim_pid) - sim_cpu
    stop.set()
    await task
    return Measure(
        f"whole pool ({base.providers['vllm'].client})", in_flight, total - done, wall, cpu, sim_cpu
    )


async def bench_pool_processes(
    base: Settings, in_flight: int, rounds: int, sim_pid: int, processes: int
) -> Measure:
    """N pool processes in one consumer group, C/N calls in flight each: all in the group before the assignments
    are loaded, measured from when every one of them is busy."""
    settings, run = pool_settings(base, in_flight // processes, processes)
    await ensure_topics(settings.kafka, settings.pools)
    spawn = multiprocessing.get_context("spawn")
    stop, counts = spawn.Event(), [spawn.Value("q", -1, lock=False) for _ in range(processes)]
    children = [
        spawn.Process(target=pool_process, args=(settings, count, stop), daemon=True) for count in counts
    ]
    for child in children:
        child.start()
    try:
        await until_counted(
            children, lambda: min(c.value for c in counts) >= 0
        )  # each one has its partitions
        total = in_flight * (rounds + 1)
        await preload(settings, [assignment(n, run) for n in range(total)])
        await until_counted(children, lambda: min(c.value for c in counts) >= in_flight // processes)
        done, sim_cpu, started = sum(c.value for c in counts), process_cpu_s(sim_pid), time.perf_counter()
        cpu = sum(process_cpu_s(child.pid or 0) for child in children)
        await until_counted(children, lambda: sum(c.value for c in counts) >= total)
        wall, sim_cpu = time.perf_counter() - started, process_cpu_s(sim_pid) - sim_cpu
        cpu = sum(process_cpu_s(child.pid or 0) for child in children) - cpu
    finally:
        stop.set()
        for child in children:
            child.join(30)
    return Measure(
        f"whole pool ({base.providers['vllm'].client}) x{processes}",
        in_flight,
        total - done,
        wall,
        cpu,
        sim_cpu,
    )


async def until_counted(children: list[BaseProcess], reached: Callable[[], bool]) -> None:
    while not reached():
        if dead := [c for c in children if not c.is_alive()]:
            raise RuntimeError(f"a pool process exited with {dead[0].exitcode}")
        await asyncio.sleep(0.002)


def pool_process(settings: Settings, processed: c_longlong, stop: ProcessEvent) -> None:
    """One pool process of `--processes`: runs a PoolWorker, publishing how many assignments it finished."""
    asyncio.run(_pool_process(settings, processed, stop))


async def _pool_process(settings: Settings, processed: c_longlong, stop: ProcessEvent) -> None:
    worker = build_pool_worker(settings, "slm")
    freeze_startup_heap(POOL_YOUNG_OBJECTS)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    while not stop.is_set() and not task.done():
        if (
            getattr(worker, "consumer", None) is not None and worker.consumer.assignment()
        ):  # -1 until it has partitions
            processed.value = worker.processed
        await asyncio.sleep(0.002)
    stopping.set()
    await task
    processed.value = worker.processed


async def until_processed(worker: PoolWorker, count: int, task: asyncio.Task[None]) -> None:
    while worker.processed < count:
        if task.done():
            task.result()
        await asyncio.sleep(0.002)


async def preload(settings: Settings, assignments: list[Assignment]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        topic = settings.kafka.pool_topic("slm")
        await asyncio.gather(
            *[
                await producer.send(topic, a.model_dump_json().encode(), key=a.item.job_id.encode())
                for a in assignments
            ]
        )
    finally:
        await producer.stop()


def report(measures: list[Measure]) -> Table:
    table = Table(
        "scope",
        "in flight",
        "requests",
        "req/s",
        "bound C/L",
        "ratio",
        "CPU ms/req",
        "core busy",
        "sim CPU ms/req",
        title=f"pool throughput vs Little's law (simulator latency {LATENCY_MS:g} ms, jitter 0; {os.cpu_count()} CPUs)",
    )
    for m in measures:
        table.add_row(
            m.scope,
            str(m.in_flight),
            f"{m.requests:,}",
            f"{m.throughput:,.0f}",
            f"{m.bound:,.0f}",
            f"{m.throughput / m.bound:.2f}x",
            f"{1000 * m.cpu_s / m.requests:.3f}",
            f"{m.cpu_s / m.wall_s:.0%}",
            f"{1000 * m.sim_cpu_s / m.requests:.3f}",
        )
    return table


def bench_settings(data: Path, bootstrap: str, sim_port: int) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap},
        local_broker={"data_dir": data / "kafka"},
        log_level="WARNING",
        simulator={"port": sim_port, "latency_ms": LATENCY_MS, "jitter_ms": 0},
    )


def start_broker(data: Path, sim_port: int, attempts: int = 3) -> tuple[Settings, LocalKafkaBroker]:
    """A local broker on free ports; another port if one was taken meanwhile (a busy shared machine)."""
    for attempt in range(attempts):
        base = bench_settings(data / f"try{attempt}", f"127.0.0.1:{free_broker_port()}", sim_port)
        broker = LocalKafkaBroker(base.local_broker, base.kafka)
        try:
            broker.start()
            return base, broker
        except BrokerError:
            broker.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def with_client(base: Settings, client: str) -> Settings:
    """The vLLM provider through the lean aiohttp client or the openai SDK."""
    return base.model_copy(
        update={
            "providers": {
                **base.providers,
                "vllm": base.providers["vllm"].model_copy(update={"client": client}),
            }
        }
    )


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    sim_port = free_port()
    broker = None
    if args.bootstrap:
        base = bench_settings(data, args.bootstrap, sim_port)
    else:
        base, broker = start_broker(data, sim_port)
    env = {
        "MODELYARD_SIMULATOR__PORT": str(sim_port),
        "MODELYARD_SIMULATOR__LATENCY_MS": str(LATENCY_MS),
        "MODELYARD_SIMULATOR__JITTER_MS": "0",
        "MODELYARD_LOG_LEVEL": "WARNING",
    }
    measures: list[Measure] = []
    try:
        with ProcessSupervisor(data / "logs", env=env) as supervisor:
            sim = supervisor.start("simulator", "simulator")
            wait_for_port("127.0.0.1", sim_port, 30, supervisor)
            for client, in_flight in itertools.product(args.clients, args.inflight):
                settings = with_client(base, client)
                if "backend" in args.scopes:
                    with console.status(f"backend alone ({client}), {in_flight} in flight..."):
                        measures.append(await bench_backend(settings, in_flight, args.rounds, sim.pid))
                for processes in args.processes if "pool" in args.scopes else []:
                    with console.status(f"whole pool ({client}) x{processes}, {in_flight} in flight..."):
                        if processes == 1:
                            measures.append(await bench_pool(settings, in_flight, args.rounds, sim.pid))
                        else:
                            measures.append(
                                await bench_pool_processes(
                                    settings, in_flight, args.rounds, sim.pid, processes
                                )
                            )
        Console(width=140).print(report(measures))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inflight", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument(
        "--rounds", type=int, default=20, help="requests per caller (each round is one latency)"
    )
    parser.add_argument("--scopes", nargs="+", default=["backend", "pool"], choices=["backend", "pool"])
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    parser.add_argument(
        "--clients",
        nargs="+",
        default=["lean", "sdk"],
        choices=["lean", "sdk"],
        help="vLLM client(s) to measure",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1],
        help="pool processes in the consumer group (each runs C/N)",
    )
    arguments = parser.parse_args()
    if any(c % p for c in arguments.inflight for p in arguments.processes):
        parser.error("every --inflight must divide by every --processes (each process runs C/N)")
    asyncio.run(main(arguments))
