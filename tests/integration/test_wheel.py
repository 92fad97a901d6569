"""The wheel carries every file the code reads: built from what the Dockerfile copies, installed into a fresh
virtualenv outside the checkout, it loads the price catalog and the migrations, answers `costs price`, and
its `modelyard sink` (the image's entrypoint and the compose sink's command) gets ready on a real broker.

An editable install reads the files from the checkout and hides a missing package-data pattern; so here the
package comes only from the wheel. Its dependencies come from this test's own environment through a .pth
line in the fresh venv (appended after the venv's own site-packages, so the wheel's copy wins, and the
editable install's finder, itself a .pth, is never run), which keeps the test offline and fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from schemas.migrations import load_migrations
from tests.helpers import free_port, get
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("modelyard", "schemas", "streams", "workers")


def dockerfile_copies() -> list[str]:
    """The paths the Dockerfile copies into the image before `pip install .`."""
    text = (ROOT / "Dockerfile").read_text()
    sources = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert re.search(r"^RUN pip install .*\.\s*$", text, re.M), "the image installs the project non-editable"
    return [path for group in sources for path in group]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """(the wheel, the fresh venv's python, a working directory outside the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for path in dockerfile_copies():
        if (ROOT / path).is_dir():
            shutil.copytree(ROOT / path, source / path, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / path, source / path)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (base / "dist").glob("modelyard-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_modelyard_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    workdir = base / "run"
    workdir.mkdir()
    yield wheel, python, workdir


def outside_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MODELYARD_")}
    return env | extra


def test_every_data_file_of_the_packages_is_in_the_wheel(installed: tuple[Path, Path, Path]) -> None:
    wheel, _, _ = installed
    shipped = set(zipfile.ZipFile(wheel).namelist())
    data = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert {"modelyard/data/prices/anthropic.yaml", "schemas/migrations/0001_results_and_costs.sql"} <= data
    assert data - shipped == set()


def test_the_installed_package_loads_the_catalog_and_migrations(installed: tuple[Path, Path, Path]) -> None:
    _, python, workdir = installed
    script = (
        "import modelyard, json; from workers.sink.pricing import PriceCatalog; "
        "from schemas.migrations import load_migrations; from importlib import resources; "
        "c = PriceCatalog.load(reference_model='claude-sonnet-5'); "
        "print(json.dumps([modelyard.__file__, c.version, sorted(c.by_model), [m.version for m in load_migrations()], "
        "len(resources.files('modelyard').joinpath('data/sample_jobs.jsonl').read_bytes())]))"
    )
    run = subprocess.run(
        [str(python), "-c", script], cwd=workdir, env=outside_env(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    where, version, models, migrations, sample = json.loads(run.stdout)
    assert Path(where).is_relative_to(python.parent.parent) and not Path(where).is_relative_to(ROOT)
    bundled = PriceCatalog.load(reference_model="claude-sonnet-5")
    assert (version, models) == (bundled.version, sorted(bundled.by_model))
    assert migrations == [m.version for m in load_migrations()]
    assert sample == len((ROOT / "modelyard/data/sample_jobs.jsonl").read_bytes())


def test_the_console_script_prices_a_result(installed: tuple[Path, Path, Path]) -> None:
    _, python, workdir = installed
    result = workdir / "result.json"
    result.write_text(
        '{"job_id": "w-1", "attempt": 1, "tenant": "t", "task_type": "other", "pool": "frontier", '
        '"provider": "openai", "model": "gpt-5-mini-2025-08-07", "status": "ok", "latency_ms": 1, '
        '"usage": {"input_tokens": 1000000}, "completed_at": "2026-12-01T00:00:00Z"}'
    )
    run = subprocess.run(
        [str(python.parent / "modelyard"), "costs", "price", str(result)],
        cwd=workdir,
        env=outside_env(COLUMNS="160"),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "catalog entry: gpt-5-mini (rule: dated)" in run.stdout and "0.25" in run.stdout


def test_the_sink_starts_from_the_wheel(
    installed: tuple[Path, Path, Path], pipeline_env: dict[str, str], pipeline_settings: Settings
) -> None:
    _, python, workdir = installed
    asyncio.run(ensure_topics(pipeline_settings.kafka, pipeline_settings.pools))
    port = free_port()
    log = (workdir / "sink.log").open("wb")
    sink = subprocess.Popen(
        [str(python.parent / "modelyard"), "sink"],
        cwd=workdir,
        env=outside_env(**pipeline_env, MODELYARD_METRICS__PORT=str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while get(f"http://127.0.0.1:{port}/readyz")[0] != 200:
            assert sink.poll() is None, (workdir / "sink.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the sink never got ready"
            time.sleep(0.3)
    finally:
        sink.terminate()
        sink.wait(30)
        log.close()
    assert "migrations applied now: [1, 2, 3" in (workdir / "sink.log").read_text()
