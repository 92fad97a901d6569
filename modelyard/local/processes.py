"""ProcessSupervisor: starts modelyard's process kinds as children, each with its own log, and stops them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from modelyard.core._exceptions import ProcessError


class ProcessSupervisor:
    def __init__(self, logs_dir: Path, env: dict[str, str] | None = None) -> None:
        self.logs_dir = logs_dir
        self.env = {**os.environ, **(env or {})}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        logs_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run `python -m modelyard ARGS` in its own session, logging to <logs_dir>/<name>.log; `env` adds to
        the supervisor's environment for this child only (e.g. its own metrics port)."""
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - owned by the child
        child = subprocess.Popen(
            [sys.executable, "-m", "modelyard", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            start_new_session=True,
        )
        self.children[name] = child
        return child

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise ProcessError(f"{name} exited with code {child.returncode}: {self.tail(name)}")

    def tail(self, name: str, lines: int = 3) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(text[-lines:])

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM (the process drains and commits), then SIGKILL after timeout."""
        child = self.children.pop(name, None)
        if child is None or child.poll() is not None:
            return child.returncode if child else None
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        child = self.children.pop(name)
        child.kill()
        child.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)

    def __enter__(self) -> ProcessSupervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_for_port(host: str, port: int, timeout: float, supervisor: ProcessSupervisor | None = None) -> None:
    from modelyard.local.broker import port_is_open

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_is_open(host, port):
            return
        if supervisor:
            supervisor.check_alive()
        time.sleep(0.1)
    raise ProcessError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
