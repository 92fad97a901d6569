"""`modelyard up` / `down`: the whole local pipeline as supervised processes, each with its own ports.

`up` checks every port first (a Kafka broker this stack did not start is reported, not silently used), starts
the broker when none runs, creates the topics, then starts a supervisor process in the background
(`modelyard/local/stack_supervisor.py`) that runs the simulator (when a provider has no key or endpoint),
the sink, the router and each pool, restarts one that crashes, and stops them all in order on `down`. What
runs where is kept in `<state_dir>/stack.json`, which `status`, `top` and `down` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelyard.core._exceptions import BrokerError, ProcessError
from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from modelyard.local.broker import LocalKafkaBroker, parse_host_port, port_is_open

DOWN_TIMEOUT_S = 120.0


@dataclass
class StackProcess:
    """One process of the stack: its command (`python -m modelyard ARGS`) and where it answers."""

    name: str
    args: list[str]
    metrics_port: int | None = None  # /metrics, /healthz, /readyz
    port: int | None = None  # the simulator's own port
    pid: int | None = None
    state: str = "planned"  # running, restarting, failed, stopped
    restarts: int = 0

    def env(self, settings: Settings) -> dict[str, str]:
        if self.metrics_port is None:
            return {}
        return {
            "MODELYARD_METRICS__PORT": str(self.metrics_port),
            "MODELYARD_METRICS__HOST": settings.stack.metrics_host,
        }

    def metrics_url(self, settings: Settings) -> str | None:
        return f"http://{settings.stack.metrics_host}:{self.metrics_port}" if self.metrics_port else None


@dataclass
class StackState:
    supervisor_pid: int
    started_at: float
    bootstrap_servers: str
    broker_started: bool
    query_url: str | None
    logs_dir: str
    processes: list[StackProcess] = field(default_factory=list)

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.state_dir / "stack.json"

    @classmethod
    def load(cls, settings: Settings) -> StackState | None:
        try:
            data = json.loads(cls.path(settings).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        data["processes"] = [StackProcess(**p) for p in data["processes"]]
        return cls(**data)

    def save(self, settings: Settings) -> None:
        path = self.path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        os.replace(temporary, path)

    @property
    def supervisor_alive(self) -> bool:
        return pid_alive(self.supervisor_pid)

    def endpoints(self, settings: Settings) -> dict[str, str]:
        """Process name -> its metrics base URL (processes that serve one)."""
        return {p.name: url for p in self.processes if (url := p.metrics_url(settings))}


def plan(settings: Settings) -> list[StackProcess]:
    """The stack's processes in start order; metrics ports from stack.metrics_port upwards."""
    names = [("sink", ["sink"]), ("router", ["router"])] + [
        (f"pool-{p}", ["pool", p]) for p in settings.pools
    ]
    base = settings.stack.metrics_port
    processes = [StackProcess(name, args, base + i) for i, (name, args) in enumerate(names)]
    if needs_simulator(settings):
        processes.insert(0, StackProcess("simulator", ["simulator"], port=settings.simulator.port))
    return processes


def needs_simulator(settings: Settings) -> bool:
    providers = {settings.pools[p].provider for p in settings.pools}
    providers |= {f.provider for p in settings.pools.values() for f in p.fallbacks}
    return any(settings.providers[p].mode == "simulator" for p in providers)


def stop_stages(processes: list[StackProcess]) -> list[list[StackProcess]]:
    """Router first (no new assignments), then the pools (each drains what it has in flight), the sink (writes
    it all), the simulator last."""
    rank = {"router": 0, "sink": 2, "simulator": 3}
    stages: list[list[StackProcess]] = [[], [], [], []]
    for process in processes:
        stages[rank.get(process.name, 1)].append(process)
    return [stage for stage in stages if stage]


def stop_order(processes: list[StackProcess]) -> list[StackProcess]:
    return [process for stage in stop_stages(processes) for process in stage]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = LocalKafkaBroker(settings.local_broker, settings.kafka)

    def taken_ports(self) -> list[str]:
        """Ports the stack needs that something else listens on, said plainly."""
        host = self.settings.stack.metrics_host
        wanted = [(p.name, host, p.metrics_port) for p in plan(self.settings) if p.metrics_port]
        wanted += [(p.name, self.settings.simulator.host, p.port) for p in plan(self.settings) if p.port]
        clickhouse = self.settings.clickhouse
        if clickhouse.dsn.startswith("chdb://") and clickhouse.query_port:
            wanted.append(("sink's query server", clickhouse.query_host, clickhouse.query_port))
        return [f"{where}:{port} ({name})" for name, where, port in wanted if port_is_open(where, port)]

    def broker_owner(self) -> str | None:
        """Who runs the broker on the configured port: None (nobody), "ours" or "foreign"."""
        if not self.broker.is_running():
            return None
        return "ours" if self.broker.started_here() else "foreign"

    def up(self, use_running_broker: bool = False) -> StackState:
        """Start what the stack needs; the state once the supervisor has started every process."""
        existing = StackState.load(self.settings)
        if existing is not None and existing.supervisor_alive:
            raise ProcessError(
                f"the stack is already up (supervisor pid {existing.supervisor_pid})",
                hint="`modelyard status` shows it; `modelyard down` stops it",
            )
        owner = self.broker_owner()
        if owner == "foreign" and not use_running_broker:
            host, port = parse_host_port(self.settings.kafka.bootstrap_servers)
            raise BrokerError(
                f"a Kafka broker this stack did not start listens on {host}:{port}",
                hint="stop it, run the stack on another port (MODELYARD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:19092), "
                "or pass --use-running-broker to run the stack on that broker",
            )
        if taken := self.taken_ports():
            raise ProcessError(
                f"ports the stack needs are taken: {', '.join(taken)}",
                hint="stop what listens there, or move the stack: MODELYARD_STACK__METRICS_PORT, "
                "MODELYARD_SIMULATOR__PORT, MODELYARD_CLICKHOUSE__QUERY_PORT",
            )
        started = owner is None and self.broker.start()
        asyncio.run(ensure_topics(self.settings.kafka, self.settings.pools))
        return self._start_supervisor(started)

    def _start_supervisor(self, broker_started: bool) -> StackState:
        logs = self.settings.logs_dir
        logs.mkdir(parents=True, exist_ok=True)
        StackState.path(self.settings).unlink(missing_ok=True)
        command = [sys.executable, "-m", "modelyard.local.stack_supervisor"]
        if broker_started:
            command.append("--broker-started")
        with open(logs / "supervisor.log", "ab") as log:
            child = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = StackState.load(self.settings)
            if (
                state is not None
                and state.supervisor_pid == child.pid
                and all(p.pid for p in state.processes)
            ):
                return state
            if child.poll() is not None:
                raise ProcessError(
                    f"the stack supervisor exited with code {child.returncode}; see {logs}/supervisor.log"
                )
            time.sleep(0.2)
        raise ProcessError(
            f"the stack supervisor did not start its processes in 60 s; see {logs}/supervisor.log"
        )

    def down(self) -> tuple[list[str], bool]:
        """Stop the stack (and the broker when the stack started it): the names stopped, and whether the
        broker was stopped."""
        state = StackState.load(self.settings)
        if state is None:
            return [], False
        names = [p.name for p in state.processes if pid_alive(p.pid)]
        if state.supervisor_alive:
            os.kill(state.supervisor_pid, signal.SIGTERM)
            _wait_for_exit(state.supervisor_pid, DOWN_TIMEOUT_S)
        for process in stop_order(state.processes):  # the supervisor is gone: stop what it left, by pid
            if pid_alive(process.pid):
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
                _wait_for_exit(process.pid, 30)  # type: ignore[arg-type]
        stopped_broker = state.broker_started and self.broker.stop()
        StackState.path(self.settings).unlink(missing_ok=True)
        return names, stopped_broker


def _wait_for_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
