"""`modelyard status`: each process of the local stack (alive, restarts, /healthz, /readyz, throughput),
the lag of every consumer group, and where to look next."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table

from modelyard.core._exceptions import ModelyardError
from modelyard.core.settings import Settings
from modelyard.local.stack import StackProcess, StackState, pid_alive
from modelyard.ops.pipeline_metrics import LagReader, Scrape, probe, rate, scrape

# the counter whose rate is a process's throughput, by process kind
THROUGHPUT = {
    "router": ("modelyard_router_routed_total", "routed/s"),
    "pool": ("modelyard_pool_jobs_total", "jobs/s"),
    "sink": ("modelyard_sink_results_total", "results/s"),
}


@dataclass
class ProcessStatus:
    process: StackProcess
    alive: bool
    health: int  # HTTP status of /healthz (0: no answer; -1: the process serves none)
    ready: int
    per_second: float | None
    unit: str

    @property
    def ok(self) -> bool:
        return self.alive and self.health in (200, -1) and self.ready in (200, -1)


@dataclass
class StackStatus:
    processes: list[ProcessStatus]
    lags: dict[str, int | None]
    lag_error: str | None = None

    @property
    def ready(self) -> bool:
        return all(p.ok for p in self.processes)


def gather(settings: Settings, state: StackState, sample_s: float = 1.0) -> StackStatus:
    """Probe every process, and sample its counters twice `sample_s` apart for its throughput."""
    urls = {p.name: p.metrics_url(settings) for p in state.processes}
    before = {name: scrape(url) if url else Scrape() for name, url in urls.items()}
    started = time.monotonic()
    lags, lag_error = _lags(settings)
    time.sleep(max(0.0, sample_s - (time.monotonic() - started)))
    seconds = time.monotonic() - started
    statuses = []
    for process in state.processes:
        url = urls[process.name]
        metric, unit = THROUGHPUT.get(process.name.split("-")[0], ("", ""))
        per_second = None
        if url and metric and before[process.name].answered:
            per_second = rate(before[process.name].total(metric), scrape(url).total(metric), seconds)
        health = probe(url, "/healthz") if url else -1
        ready = probe(url, "/readyz") if url else -1
        if process.port is not None:  # the simulator: ready when its port answers
            ready = health = 200 if probe(f"http://{settings.simulator.host}:{process.port}", "/") else 0
        statuses.append(ProcessStatus(process, pid_alive(process.pid), health, ready, per_second, unit))
    return StackStatus(statuses, lags, lag_error)


def _lags(settings: Settings) -> tuple[dict[str, int | None], str | None]:
    async def read() -> dict[str, int | None]:
        async with LagReader(settings) as reader:
            return await reader.lags()

    try:
        return asyncio.run(read()), None
    except ModelyardError as exc:
        return {}, exc.one_line()


def render(settings: Settings, state: StackState, status: StackStatus) -> Group:
    table = Table(
        "process", "pid", "state", "restarts", "health", "ready", "throughput", "metrics", title="processes"
    )
    for s in status.processes:
        p = s.process
        state_text = p.state if s.alive else f"[red]{'exited' if p.state == 'running' else p.state}[/red]"
        rate_text = f"{s.per_second:,.1f} {s.unit}" if s.per_second is not None else "-"
        metrics = p.metrics_url(settings) or f"port {p.port}"
        table.add_row(
            p.name,
            str(p.pid or "-"),
            state_text,
            str(p.restarts),
            _probe(s.health),
            _probe(s.ready),
            rate_text,
            metrics,
        )
    lags = Table("consumer group", "lag (records)", title="consumer lag")
    for group, lag in status.lags.items():
        lags.add_row(group, "?" if lag is None else f"{lag:,}")
    notes = [
        f"Kafka {state.bootstrap_servers} ({'started by this stack' if state.broker_started else 'not started by this stack: down leaves it'})"
    ]
    if state.query_url:
        notes.append(f"ClickHouse (read-only, the sink's engine): {state.query_url}")
    notes.append(f"logs: {state.logs_dir}/")
    if status.lag_error:
        notes.append(f"[red]lag unknown:[/red] {status.lag_error}")
    return Group(table, lags, *notes)


def _probe(code: int) -> str:
    if code == -1:
        return "-"
    return "[green]ok[/green]" if code == 200 else f"[red]{code or 'no answer'}[/red]"


def next_steps(settings: Settings, state: StackState) -> str:
    """What `up` prints once the stack is ready."""
    lines = [
        "Next:",
        "  modelyard submit modelyard/data/sample_jobs.jsonl   # send work (or the Python SDK: modelyard.client)",
        "  modelyard top                                     # live view: throughput, latency, lag, spend",
        "  modelyard results --follow                        # results as they land",
        "  modelyard costs --by pool,model                   # the cost ledger, while it runs",
    ]
    if state.query_url:
        lines.append(f"  clickhouse-connect / Grafana: {state.query_url} (read-only)")
    lines += [
        "  modelyard status                                  # processes, readiness, lag",
        "  modelyard down                                    # stop it all",
    ]
    return "\n".join(lines)


def wait_ready(settings: Settings, state: StackState, timeout: float, on_wait=None) -> bool:
    """Poll every process's readiness until all are ready (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [p.name for p in state.processes if not _ready(settings, p)]
        if not waiting:
            return True
        if on_wait is not None:
            on_wait(", ".join(waiting))
        time.sleep(0.5)
    return False


def _ready(settings: Settings, process: StackProcess) -> bool:
    if process.port is not None:
        return probe(f"http://{settings.simulator.host}:{process.port}", "/") != 0
    url = process.metrics_url(settings)
    return url is not None and probe(url, "/readyz") == 200
