"""The Docker image and docker-compose start modelyard's own commands: the image installs every package
(non-editable, so the wheel's package data is what it reads: tests/integration/test_wheel.py) and each
compose service built from it runs a command the CLI accepts; the sink service runs the sink."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from modelyard.cli import _parser

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> list[list[str]]:
    return [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()]


def test_the_image_installs_every_package_and_enters_modelyard() -> None:
    lines = dockerfile()
    copied = {path for line in lines if line[0] == "COPY" for path in line[1:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.rstrip("*") for pattern in packages["include"]} | {
        "pyproject.toml",
        "README.md",
    } <= copied
    assert ["RUN", "pip", "install", "--no-cache-dir", "."] in lines  # not editable: package data must ship
    assert ["ENTRYPOINT", '["modelyard"]'] in lines


def test_every_compose_service_of_the_image_runs_a_modelyard_command() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "modelyard:local"}
    assert {"router", "pool-slm", "pool-frontier", "sink", "simulator"} <= set(ours)
    parser = _parser()
    for name, service in ours.items():
        assert service["build"] == ".", name
        parser.parse_args(service["command"])  # exits (SystemExit) on a command the CLI does not know
    handler = parser.parse_args(ours["sink"]["command"]).handler
    assert ours["sink"]["command"] == ["sink"] and "run_sink" in handler.__code__.co_consts
