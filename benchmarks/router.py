"""Router throughput vs a raw aiokafka consume -> produce pass-through, same broker, same messages, one run.

Throughput is measured the same way for both: N / (last output timestamp - first output timestamp), so
process start-up is excluded. The routers start on an empty topic and get their input (as whole record
batches, faster than they route) once their consumer group is Stable with every router in it: input waiting
before a second router joins would be half routed by the first, then paused by the rebalance. Usage:

    .venv/bin/python benchmarks/router.py --messages 100000            # one router process, 4 partitions
    .venv/bin/python benchmarks/router.py --messages 100000 --scaling  # also 2 routers on 8 partitions
    .venv/bin/python benchmarks/router.py --messages 100000 --agent    # also the Faust agent engine
    .venv/bin/python benchmarks/router.py --messages 100000 --learned  # also with a learned routing model

--learned fits a routing model (streams/learned_routing.py) on the benchmark's own items, with outcomes that make
the SLM right on classification and extraction and the frontier right on nearly everything, and routes with it
(every item goes through the learned step). It also prints the learned step's own cost per item, measured
alone on the router's batch size.

Each scenario runs --repeat times (default 3), interleaved, and the best run counts: on a shared machine a
busy moment slows one run, never speeds one up. Every run is listed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from modelyard.app import build_routing_policy
from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.broker import LocalKafkaBroker
from modelyard.local.demo import sample_lines
from modelyard.local.processes import ProcessSupervisor
from schemas import WorkItem
from schemas.decoding import decode
from streams.batch_router import by_partition, send_records
from streams.partitioning import partitions_for
from streams.policy import Outgoing

console = Console(stderr=True)


def messages(n: int) -> list[tuple[bytes, bytes]]:
    valid = [
        orjson.loads(raw) for _, raw in sample_lines("bench") if isinstance(decode(WorkItem, raw), WorkItem)
    ]
    out = []
    for i in range(n):
        job = dict(valid[i % len(valid)], job_id=f"bench-{i}")
        out.append((job["job_id"].encode(), orjson.dumps(job)))
    return out


async def produce(settings: Settings, topic: str, batch: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for start in range(0, len(batch), 5000):
            await asyncio.gather(
                *[await producer.send(topic, value=v, key=k) for k, v in batch[start : start + 5000]]
            )
    finally:
        await producer.stop()


class MachineCpu:
    """Samples /proc/stat every 0.1 s in a thread, so a run can say how many of the machine's cores were
    busy (all processes: broker, routers, this script) between two wall-clock instants."""

    def __init__(self) -> None:
        self.samples: list[
            tuple[float, int, int, int]
        ] = []  # time, machine busy, machine total, watched processes
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            self.samples.append(
                (time.time(), sum(fields) - fields[3] - fields[4], sum(fields), self._watched())
            )

    def _watched(self) -> int:
        ticks = 0
        for pid in self.pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                ticks += sum(
                    int(v) for v in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
                )
        return ticks

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(machine cores busy, CPU seconds of the watched processes) between two wall-clock instants."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-2:]
        (_, busy0, total0, mine0), (_, busy1, total1, mine1) = inside[0], inside[-1]
        seconds = max(inside[-1][0] - inside[0][0], 1e-3)
        cores = (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)
        return cores, (mine1 - mine0) / os.sysconf("SC_CLK_TCK") * min(
            (end - start) / seconds, 1.0
        ) if self.pids else float("nan")

    def stop(self) -> None:
        self._stop.set()


CPU: MachineCpu | None = None


class Run(NamedTuple):
    rate: float
    cores: float  # machine cores busy during the run's outputs
    router_us: float = float("nan")  # CPU microseconds of the router processes per record


async def measured(settings: Settings, topics: list[str], n: int, timeout: float) -> Run:
    stamps = await output_timestamps(settings, topics, n, timeout)
    assert CPU is not None
    cores, router_s = CPU.between(stamps[0], stamps[-1])
    return Run(n / max(stamps[-1] - stamps[0], 0.001), cores, router_s / n * 1e6)


async def group_stable(settings: Settings, group_id: str, members: int, timeout: float = 120) -> None:
    """Until the group has all its members and is Stable: input produced before a second router joins
    would be half routed by the first, then paused by the rebalance."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                described = await admin.describe_consumer_groups([group_id])
            except GroupCoordinatorNotAvailableError:  # a fresh broker still loading its offsets topic
                await asyncio.sleep(0.5)
                continue
            _, _, state, _, _, joined = described[0].groups[0][:6]
            if state == "Stable" and len(joined) == members:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"consumer group {group_id} not Stable with {members} members after {timeout:.0f}s"
        )
    finally:
        await admin.close()


async def produce_batches(settings: Settings, topic: str, batch: list[tuple[bytes, bytes]]) -> None:
    """The input as whole record batches per partition (murmur2 of the key, as the router writes its own
    outputs): many times faster than the routers, so the routers, not this producer, set the pace."""
    producer = AIOKafkaProducer(**settings.kafka.client_options(), max_batch_size=1024 * 1024)
    await producer.start()
    try:
        count = len(await producer.partitions_for(topic))
        records = [Outgoing(topic, key, value) for key, value in batch]
        deliveries = []
        for partition, group in by_partition(
            records, partitions_for([k for k, _ in batch], count).tolist()
        ).items():
            deliveries += await send_records(producer, topic, partition, group)
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def output_timestamps(settings: Settings, topics: list[str], n: int, timeout: float) -> list[float]:
    """Wall-clock seconds of the n output records (their Kafka timestamps), sorted."""
    consumer = AIOKafkaConsumer(
        *topics, **settings.kafka.client_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    stamps: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(stamps)}/{n} outputs after {timeout:.0f}s")
            for records in (await consumer.getmany(timeout_ms=500, max_records=10000)).values():
                stamps += [r.timestamp / 1000 for r in records]
    finally:
        await consumer.stop()
    return sorted(stamps)


async def raw_passthrough(
    settings: Settings, source: str, sinks: list[str], n: int, decode_route: bool = False
) -> None:
    """Bytes in -> bytes out; with decode_route, each value is also parsed with orjson and its topic picked
    from a field (the issue's "raw consume -> decode -> route -> produce" baseline)."""
    consumer = AIOKafkaConsumer(
        source,
        **settings.kafka.client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    producer = AIOKafkaProducer(**settings.kafka.client_options(), linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        while done < n:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    topic = (
                        sinks[0]
                        if not decode_route or orjson.loads(record.value).get("priority", 5) < 8
                        else sinks[1]
                    )
                    await producer.send(topic, value=record.value, key=record.key)
                done += sum(1 for _ in records)
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()


def scenario_settings(base: Settings, prefix: str, partitions: int) -> Settings:
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_prefix": prefix, "partitions": partitions}),
            "app_id": prefix,
        }
    )


async def run_raw(
    base: Settings, batch: list[tuple[bytes, bytes]], partitions: int, decode_route: bool = False
) -> Run:
    settings = scenario_settings(base, f"bench-raw-{uuid.uuid4().hex[:6]}", partitions)
    await ensure_topics(settings.kafka, settings.pools)
    await produce(settings, settings.kafka.jobs_topic, batch)
    outs = [settings.kafka.pool_topic("slm"), settings.kafka.pool_topic("frontier")]
    await raw_passthrough(settings, settings.kafka.jobs_topic, outs, len(batch), decode_route)
    return await measured(settings, outs, len(batch), 120)


async def run_router(
    base: Settings,
    batch: list[tuple[bytes, bytes]],
    partitions: int,
    routers: int,
    engine: str = "batch",
    policy_file: Path | None = None,
) -> Run:
    settings = scenario_settings(base, f"bench-router-{uuid.uuid4().hex[:6]}", partitions)
    await ensure_topics(settings.kafka, settings.pools)
    env = {
        "MODELYARD_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "MODELYARD_KAFKA__PARTITIONS": str(partitions),
        "MODELYARD_APP_ID": settings.app_id,
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MODELYARD_LOG_LEVEL": "WARNING",
        "MODELYARD_ROUTER__ENGINE": engine,
    }
    if policy_file is not None:
        env["MODELYARD_ROUTER__POLICY_FILE"] = str(policy_file.resolve())
    outputs = [settings.kafka.pool_topic(p) for p in settings.pools] + [settings.kafka.dead_letter_topic]
    with ProcessSupervisor(Path(".modelyard/logs/bench"), env=env) as supervisor:
        assert CPU is not None
        CPU.pids = [supervisor.start(f"router-{i}", "router").pid for i in range(routers)]
        try:
            await group_stable(settings, f"{settings.app_id}.router", routers)
            await produce_batches(settings, settings.kafka.jobs_topic, batch)
            return await measured(settings, outputs, len(batch), 600)
        finally:
            CPU.pids = []


def learned_policy(base: Settings, batch: list[tuple[bytes, bytes]], folder: Path) -> Path:
    """A routing model fitted on the benchmark's items, and a policy file: the settings' routes plus it."""
    import yaml

    from modelyard.ops.routing_fit import Outcome, fit_router
    from streams.learned_routing import RoutingRegistry, item_keys
    from streams.rules import policy_from_routes
    from streams.tagging import tag_task

    items = {w.job_id: w for _, raw in batch[:5000] if isinstance(w := decode(WorkItem, raw), WorkItem)}
    outcomes = []
    for n, item in enumerate(items.values()):
        task = tag_task(item)[0].value
        slm_right = float((task in ("classification", "extraction")) != (n % 10 == 0))
        keys = item_keys(task, item.tenant, item.params.labels, item.metadata, item.input_text(), "category")
        outcomes.append(Outcome(item.input_text(), keys, (slm_right, float(n % 20 != 0))))
    model = fit_router(outcomes, ["slm", "frontier"], [0.0001, 0.01], target=None)
    RoutingRegistry(folder / "routing").register(model)
    policy = policy_from_routes(base.routes, base.default_pool, set(base.pools)).model_dump(mode="json")
    policy["learned"] = {"models_dir": str((folder / "routing").resolve())}
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def learned_step_us(base: Settings, batch: list[tuple[bytes, bytes]], policy_file: Path) -> float:
    """The learned step alone (features, scores, choice) on the router's batch size: CPU microseconds an item
    (process time, so a busy machine does not inflate it)."""
    from streams.learned_routing import RoutingRegistry, item_keys
    from streams.tagging import tag_task

    model = RoutingRegistry(policy_file.parent / "routing").load_current()
    assert model is not None
    items = [w for _, raw in batch[:20_000] if isinstance(w := decode(WorkItem, raw), WorkItem)]
    texts = [i.input_text() for i in items]
    keys = [
        item_keys(tag_task(i)[0].value, i.tenant, i.params.labels, i.metadata, t, "category")
        for i, t in zip(items, texts, strict=True)
    ]
    size, best = base.router.batch_max, float("inf")
    for _ in range(3):
        started = time.process_time()
        for start in range(0, len(items), size):
            model.route(texts[start : start + size], keys[start : start + size])
        best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def policy_alone(base: Settings, batch: list[tuple[bytes, bytes]], clock=time.perf_counter) -> float:
    """The routing decision itself, in-process (where the router's own Python time goes): items a second."""
    from modelyard.app import freeze_startup_heap
    from streams.policy import Source

    policy, size = build_routing_policy(base), base.router.batch_max
    records = [(value, Source("jobs", 0, offset)) for offset, (_, value) in enumerate(batch)]
    freeze_startup_heap()  # as the router process does
    started = clock()
    for start in range(0, len(records), size):
        policy.route_many(records[start : start + size])
    return len(batch) / (clock() - started)


def learned_added_us(
    base: Settings, with_learned: Settings, batch: list[tuple[bytes, bytes]], repeat: int
) -> float:
    """CPU microseconds an item that the learned step adds to the policy (best of `repeat` each, process time)."""
    plain = max(policy_alone(base, batch, time.process_time) for _ in range(repeat))
    learned = max(policy_alone(with_learned, batch, time.process_time) for _ in range(repeat))
    return 1e6 / learned - 1e6 / plain


async def main(args: argparse.Namespace) -> None:
    global CPU
    CPU = MachineCpu()
    base = load_settings()
    broker = LocalKafkaBroker(base.local_broker, base.kafka)
    started = broker.start()
    try:
        batch = messages(args.messages)
        console.print(
            f"{len(batch):,} messages of ~{sum(len(v) for _, v in batch) // len(batch)} bytes; broker {base.kafka.bootstrap_servers}"
        )
        table = Table(
            "scenario",
            "partitions",
            "processes",
            "msg/s (best)",
            "runs",
            "cores busy",
            "router CPU us/msg",
            "vs pass-through",
            "vs decode+route",
            title=f"router throughput, best of {args.repeat} interleaved runs",
        )
        scenarios = {
            "raw": lambda: run_raw(base, batch, 4),
            "raw_dr": lambda: run_raw(base, batch, 4, decode_route=True),
            "one": lambda: run_router(base, batch, 4, 1),
        }
        if args.scaling:
            scenarios["two"] = lambda: run_router(base, batch, 8, 2)
        if args.agent:
            scenarios["agent"] = lambda: run_router(base, batch, 4, 1, engine="agent")
        learned_file = None
        if args.learned:
            learned_file = learned_policy(base, batch, Path(tempfile.mkdtemp(prefix="bench-learned-")))
            scenarios["learned"] = lambda: run_router(base, batch, 4, 1, policy_file=learned_file)
        runs: dict[str, list[Run]] = {name: [] for name in scenarios}
        for attempt in range(
            args.repeat
        ):  # interleaved, so a busy moment of the machine hits every scenario alike
            for name, scenario in scenarios.items():
                with console.status(f"run {attempt + 1}/{args.repeat}: {name}..."):
                    runs[name].append(await scenario())
        best = {name: max(rates) for name, rates in runs.items()}
        raw, raw_dr = best["raw"].rate, best["raw_dr"].rate

        def row(name: str, partitions: int, processes: int, key: str, extra: str = "") -> None:
            rate, cores, router_us = best[key]
            spread = " ".join(f"{r.rate / 1000:.0f}k" for r in runs[key])
            table.add_row(
                name,
                str(partitions),
                str(processes),
                f"{rate:,.0f}",
                spread,
                f"{cores:.2f} of {os.cpu_count()}",
                "-" if router_us != router_us else f"{router_us:.1f}",
                f"{rate / raw:.2f}x",
                f"{rate / raw_dr:.2f}x{extra}",
            )

        row("raw aiokafka consume -> produce (bytes pass-through)", 4, 1, "raw")
        row("raw aiokafka consume -> decode -> route -> produce", 4, 1, "raw_dr")
        row("modelyard router, batch engine", 4, 1, "one")
        if args.scaling:
            row(
                "modelyard router, batch engine",
                8,
                2,
                "two",
                f" ({best['two'].rate / best['one'].rate:.2f}x of 1 process)",
            )
        if args.agent:
            row("modelyard router, Faust agent engine", 4, 1, "agent")
        if args.learned:
            row("modelyard router, batch engine, learned routing", 4, 1, "learned")
        runs["alone"] = [Run(policy_alone(base, batch), 1.0) for _ in range(args.repeat)]
        best["alone"] = max(runs["alone"])
        row("routing policy alone, no Kafka (validate, tag, rules, novelty)", 0, 1, "alone")
        if learned_file is not None:
            with_learned = base.model_copy(
                update={"router": base.router.model_copy(update={"policy_file": learned_file})}
            )
            runs["alone_learned"] = [Run(policy_alone(with_learned, batch), 1.0) for _ in range(args.repeat)]
            best["alone_learned"] = max(runs["alone_learned"])
            row("routing policy alone, no Kafka, with learned routing", 0, 1, "alone_learned")
        Console(width=200).print(table)
        if learned_file is not None:
            added = learned_added_us(base, with_learned, batch, args.repeat)
            console.print(
                f"learned routing: the model's step alone {learned_step_us(base, batch, learned_file):.2f} CPU us an item "
                f"(batches of {base.router.batch_max}); added to the policy's CPU time an item: {added:.2f} us"
            )
    finally:
        if started:
            broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--scaling", action="store_true", help="also 2 router processes on 8 partitions")
    parser.add_argument("--agent", action="store_true", help="also the Faust agent engine")
    parser.add_argument(
        "--learned", action="store_true", help="also the batch engine with a learned routing model"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved runs per scenario; the best counts (default 3)"
    )
    asyncio.run(main(parser.parse_args()))
