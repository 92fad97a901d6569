"""The commands for a running pipeline: `up`, `down`, `status`, `top`, `results`."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from rich.console import Console

from modelyard.core._exceptions import ProcessError
from modelyard.core.settings import Settings


def add_live_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "up", cmd_up, "start the local stack (broker, simulator, sink, router, pools) in the background"
    )
    p.add_argument(
        "--use-running-broker",
        action="store_true",
        help="run on a Kafka broker already on the configured port that this stack did not start",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for readiness (stack.ready_timeout_s)"
    )
    p.add_argument(
        "--brokers",
        type=int,
        default=None,
        help="start a local cluster of this many brokers (3: topics replicated 3 times, min.insync.replicas 2)",
    )
    command("down", cmd_down, "stop the local stack (each process drains and commits first)")
    p = command(
        "status", cmd_status, "the local stack: each process's health, readiness, throughput; consumer lag"
    )
    p.add_argument("--sample", type=float, default=1.0, help="seconds over which throughput is measured")
    p = command(
        "top", cmd_top, "live view: per pool in flight, items/s, latency, errors, lag; spend; dead letters"
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a process's metrics base URL (repeatable; default: the local stack's processes)",
    )
    p = command("results", cmd_results, "print results from the results topic as they land")
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new results")
    p.add_argument("--job", help="only this job_id (read from the topic's beginning)")
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument("--from-beginning", action="store_true", help="start at the topic's beginning")
    p.add_argument("--format", choices=["line", "json"], default="line")
    p.add_argument("--limit", type=int, default=None, help="stop after N results")


def cmd_up(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.stack import LocalStack
    from modelyard.local.stack_status import gather, next_steps, render, wait_ready

    if args.brokers and args.brokers > 1:
        settings = cluster_settings(settings, args.brokers)
    stack = LocalStack(settings)
    with console.status("starting the local stack..."):
        state = stack.up(use_running_broker=args.use_running_broker)
    broker = "started" if state.broker_started else f"using {stack.broker.describe()}"
    console.print(f"Kafka on {state.bootstrap_servers}: {broker}", highlight=False)
    for provider in sorted({pool.provider for pool in settings.pools.values()}):
        console.print(f"provider {provider}: {settings.providers[provider].mode}", highlight=False)
    timeout = args.timeout or settings.stack.ready_timeout_s
    with console.status("waiting until every process is ready...") as status:
        ready = wait_ready(settings, state, timeout, lambda s: status.update(f"waiting for readiness: {s}"))
    status_now = gather(settings, state, sample_s=0.2)
    Console().print(render(settings, state, status_now))
    if not ready:
        console.print(
            f"[red]not every process is ready after {timeout:.0f}s[/red]: see the logs in {state.logs_dir}/"
        )
        return 1
    Console().print(next_steps(settings, state), highlight=False)
    return 0


def cluster_settings(settings: Settings, brokers: int) -> Settings:
    """Settings for a stack on a local cluster, also put in the environment that the stack's processes
    inherit: every node's address, replication min(3, N), min.insync.replicas min(2, N)."""
    import os

    from modelyard.core.settings import load_settings
    from modelyard.local.broker import parse_host_port

    host, port = parse_host_port(settings.kafka.bootstrap_servers)
    env = {
        "MODELYARD_LOCAL_BROKER__BROKERS": str(brokers),
        "MODELYARD_KAFKA__BOOTSTRAP_SERVERS": ",".join(f"{host}:{port + 2 * n}" for n in range(brokers)),
        "MODELYARD_KAFKA__REPLICATION_FACTOR": str(min(3, brokers)),
        "MODELYARD_KAFKA__MIN_INSYNC_REPLICAS": str(min(2, brokers)),
    }
    os.environ.update(env)
    return load_settings()


def cmd_down(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.stack import LocalStack

    with console.status("stopping the local stack (each process drains first)..."):
        names, broker_stopped = LocalStack(settings).down()
    if not names and not broker_stopped:
        console.print("no local stack is up (nothing to stop)")
        return 0
    console.print(
        f"stopped: {', '.join(names) or 'nothing was running'}"
        + ("; Kafka stopped" if broker_stopped else "")
    )
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.stack import StackState
    from modelyard.local.stack_status import gather, render

    state = StackState.load(settings)
    if state is None:
        console.print("the local stack is not up: `modelyard up` starts it")
        return 3
    status = gather(settings, state, sample_s=args.sample)
    Console(width=max(Console().width, 120)).print(render(settings, state, status))
    if not state.supervisor_alive:
        console.print(
            "[red]the stack's supervisor is not running[/red]: `modelyard down`, then `modelyard up`"
        )
    return 0 if status.ready and state.supervisor_alive else 1


def cmd_top(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.stack import StackState
    from modelyard.ops.top import run_top

    endpoints = dict(item.split("=", 1) for item in args.metrics if "=" in item)
    if not endpoints:
        state = StackState.load(settings)
        if state is None:
            raise ProcessError(
                "no local stack is up and no --metrics endpoints were given",
                hint="`modelyard up`, or pass --metrics NAME=http://host:port for each process",
            )
        endpoints = state.endpoints(settings)
    asyncio.run(run_top(settings, endpoints, Console(), once=args.once))
    return 0


def cmd_results(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops.results_tail import tail_results

    started = time.monotonic()
    printed = asyncio.run(
        tail_results(
            settings.kafka,
            Console(),
            follow=args.follow,
            job=args.job,
            tenant=args.tenant,
            from_beginning=args.from_beginning,
            as_json=args.format == "json",
            limit=args.limit,
        )
    )
    if not args.follow:
        console.print(f"{printed} results ({time.monotonic() - started:.1f}s)")
    return 0
