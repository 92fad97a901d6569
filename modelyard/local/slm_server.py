"""A real vLLM OpenAI-compatible server on CPU for the SLM pool, where there is no GPU (CI, laptops).

vLLM runs from its own environment (`make slm-cpu` builds .venv-vllm, so its pins never meet ours) on a
model whose weights ship inside a package (a GGUF, converted once to safetensors by `prepare`). Nothing is
fetched from a model hub. The pool's `vllm` provider talks to it like to any vLLM: `providers.vllm.base_url`
= `slm_server.url`, pool model = `slm_server.served_model_name`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from modelyard.core._exceptions import ProcessError
from modelyard.core.settings import PROJECT_ROOT, SlmServerSettings

CONVERTER = PROJECT_ROOT / "infra" / "slm-cpu" / "convert_gguf.py"
SERVER_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


class CpuSlmServer:
    """Prepares the model directory and starts, checks and stops one vLLM server process."""

    def __init__(self, config: SlmServerSettings, state_dir: Path, logs_dir: Path) -> None:
        self.settings = config
        self.model_dir = config.model_dir.resolve()
        self.log_file = logs_dir.resolve() / "slm-server.log"
        self.pid_file = state_dir.resolve() / "slm-server.pid"

    @property
    def python(self) -> Path:
        python = self.settings.venv / "bin" / "python"
        if not python.exists():
            raise ProcessError(f"the vLLM CPU environment is missing ({python})", hint="run `make slm-cpu`")
        return python

    def is_prepared(self) -> bool:
        return (self.model_dir / "config.json").is_file() and any(self.model_dir.glob("*.safetensors"))

    def prepare(self) -> bool:
        """Convert the packaged GGUF to safetensors under the model directory; False when already there."""
        if self.is_prepared():
            return False
        self.model_dir.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(self.python), str(CONVERTER), self.settings.weights_package, str(self.model_dir)],
            capture_output=True,
            text=True,
            env={**os.environ, **SERVER_ENV},
        )
        if done.returncode != 0 or not self.is_prepared():
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise ProcessError(
                f"converting {self.settings.weights_package}'s GGUF failed: {last[0]}",
                hint="run `make slm-cpu`",
            )
        return True

    def command(self) -> list[str]:
        s = self.settings
        command = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            s.served_model_name,
            "--host",
            s.host,
            "--port",
            str(s.port),
            "--max-model-len",
            str(s.max_model_len),
            "--kv-cache-memory-bytes",
            f"{int(s.kv_cache_gib * 2**30)}",
            "--disable-uvicorn-access-log",
        ]
        return command + (["--enforce-eager"] if s.enforce_eager else [])

    def is_ready(self) -> bool:
        """True once /v1/models answers with the served model name."""
        try:
            with urllib.request.urlopen(f"{self.settings.url}/models", timeout=2.0) as response:
                return self.settings.served_model_name in response.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return False

    def start(self, on_wait: Callable[[float], None] | None = None) -> bool:
        """Start the server unless one is ready; True when this call started it. Waits for /v1/models."""
        if self.is_ready():
            return False
        if not self.is_prepared():
            raise ProcessError(f"no model in {self.model_dir}", hint="run `modelyard slm prepare` first")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **SERVER_ENV},
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self._wait_until_ready(process, on_wait)
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server this state directory started (its whole process group); True when one was stopped."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
        self.pid_file.unlink(missing_ok=True)
        return _stop_group(pid, timeout)

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], on_wait: Callable[[float], None] | None
    ) -> None:
        started = time.monotonic()
        while (waited := time.monotonic() - started) < self.settings.start_timeout_s:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ProcessError(
                    f"vLLM exited with code {process.returncode} while starting: {self.log_tail()}"
                )
            if self.is_ready():
                return
            if on_wait:
                on_wait(waited)
            time.sleep(1.0)
        self.stop()
        raise ProcessError(
            f"vLLM did not answer on {self.settings.url} within {self.settings.start_timeout_s:.0f} s; see {self.log_file}"
        )

    def log_tail(self) -> str:
        """The last error-looking line of the server's log (vLLM logs the cause last)."""
        lines = self.log_file.read_text(errors="replace").splitlines() if self.log_file.exists() else []
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors or lines or ["(empty log)"])[-1][-300:] + f" (log: {self.log_file})"


def _stop_group(pid: int, timeout: float) -> bool:
    """SIGTERM the server's process group (API server, engine core, workers), then SIGKILL after timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
