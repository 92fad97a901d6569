"""The vLLM CPU server's command line and its one-line errors (the server itself: tests/integration/test_slm_cpu.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core._exceptions import ProcessError
from modelyard.core.settings import load_settings
from modelyard.local.slm_server import CpuSlmServer


def server(tmp_path: Path, **slm: object) -> CpuSlmServer:
    settings = load_settings(
        state_dir=tmp_path / "state", slm_server={"models_dir": tmp_path / "models", **slm}
    )
    return CpuSlmServer(settings.slm_server, settings.state_dir, settings.logs_dir)


def test_command_serves_the_prepared_model_under_the_pool_model_name_without_compiling(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    command = server(tmp_path, venv=venv, port=18001, kv_cache_gib=0.5).command()
    assert command[:3] == [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    options = dict(zip(command[3::2], command[4::2], strict=False))
    assert options["--model"] == str((tmp_path / "models" / "SmolLM2-135M-Instruct").resolve())
    assert options["--served-model-name"] == load_settings().pools["slm"].model
    assert (options["--host"], options["--port"], options["--kv-cache-memory-bytes"]) == (
        "127.0.0.1",
        "18001",
        str(2**29),
    )
    assert "--enforce-eager" in command


def test_missing_environment_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ProcessError) as raised:
        server(tmp_path, venv=tmp_path / "absent").prepare()
    assert (
        "vLLM CPU environment is missing" in raised.value.one_line()
        and "make slm-cpu" in raised.value.one_line()
    )


def test_start_without_a_prepared_model_says_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="no model in") as raised:
        server(tmp_path, port=1).start()
    assert "modelyard slm prepare" in raised.value.one_line()


def test_stop_without_a_started_server_stops_nothing(tmp_path: Path) -> None:
    assert server(tmp_path).stop() is False
