"""The background process `modelyard up` leaves running: starts the stack's processes, restarts one that
exits on its own (up to stack.max_restarts within stack.restart_window_s), keeps `<state_dir>/stack.json`
current, and on SIGTERM (`modelyard down`) stops them in order, each draining and committing first.

Run as `python -m modelyard.local.stack_supervisor [--broker-started]`, with the environment of `up`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque

from modelyard.core.logs import configure_logging, secret_values
from modelyard.core.settings import Settings, load_settings
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from modelyard.local.stack import StackProcess, StackState, plan, stop_stages

log = logging.getLogger("modelyard.stack")
RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 60.0


class StackSupervisor:
    def __init__(self, settings: Settings, broker_started: bool) -> None:
        self.settings = settings
        self.children = ProcessSupervisor(settings.logs_dir)
        self.state = StackState(
            supervisor_pid=os.getpid(),
            started_at=time.time(),
            bootstrap_servers=settings.kafka.bootstrap_servers,
            broker_started=broker_started,
            query_url=settings.clickhouse.query_url if _serves_queries(settings) else None,
            logs_dir=str(settings.logs_dir),
            processes=plan(settings),
        )
        self.exits: dict[str, deque[float]] = {p.name: deque() for p in self.state.processes}
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            for process in self.state.processes:
                self._start(process)
                if process.port is not None:
                    wait_for_port(self.settings.simulator.host, process.port, 30, self.children)
            self.state.save(self.settings)
            while not self.stopping:
                self._watch()
                time.sleep(0.5)
        finally:
            self._stop_all()

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _start(self, process: StackProcess) -> None:
        child = self.children.start(process.name, *process.args, env=process.env(self.settings))
        process.pid, process.state = child.pid, "running"
        log.info("started %s (pid %d)", process.name, child.pid)

    def _watch(self) -> None:
        changed = False
        for process in self.state.processes:
            child = self.children.children.get(process.name)
            if process.state != "running" or child is None or child.poll() is None:
                continue
            changed = True
            log.warning(
                "%s exited with code %s: %s", process.name, child.returncode, self.children.tail(process.name)
            )
            self._restart_or_give_up(process)
        if changed:
            self.state.save(self.settings)

    def _restart_or_give_up(self, process: StackProcess) -> None:
        stack, now = self.settings.stack, time.monotonic()
        exits = self.exits[process.name]
        exits.append(now)
        while exits and now - exits[0] > stack.restart_window_s:
            exits.popleft()
        if len(exits) > stack.max_restarts:
            process.state = "failed"
            log.error(
                "%s exited %d times in %.0f s: not restarting it",
                process.name,
                len(exits),
                stack.restart_window_s,
            )
            return
        time.sleep(RESTART_DELAY_S)
        process.restarts += 1
        self._start(process)

    def _stop_all(self) -> None:
        """SIGTERM a stage at a time (router; every pool at once; sink; simulator), each draining first."""
        for stage in stop_stages(self.state.processes):
            running = {p.name: child for p in stage if (child := self.children.children.pop(p.name, None))}
            for child in running.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for name, child in running.items():
                log.info("stopped %s (exit code %s)", name, _wait_or_kill(child, STOP_TIMEOUT_S))
            for process in stage:
                process.state = "stopped"
        self.state.save(self.settings)


def _wait_or_kill(child: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def _serves_queries(settings: Settings) -> bool:
    return settings.clickhouse.dsn.startswith("chdb://") and bool(settings.clickhouse.query_port)


def main(argv: list[str]) -> int:
    settings = load_settings()
    configure_logging("stack", settings.log_level, settings.log_format, secret_values(settings))
    StackSupervisor(settings, broker_started="--broker-started" in argv).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
