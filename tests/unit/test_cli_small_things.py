"""Small things a new user meets first: piping a command into `head`, and the checked-in JSON Schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    """`modelyard schema work-item | head`: the reader goes away before the schema is written."""
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "schema", "work-item"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # as `head` does once it has its lines
        errors = child.stderr.read().decode()
        assert child.wait(timeout=60) in (0, 141)
        assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors


@pytest.mark.parametrize("name", ["work-item", "result"])
def test_the_checked_in_json_schema_is_the_models(name: str) -> None:
    """schemas/json/<name>.schema.json (for producers in other languages) is what `modelyard schema` prints;
    regenerate with `modelyard schema <name> > schemas/json/<name>.schema.json`."""
    checked_in = json.loads((ROOT / "schemas" / "json" / f"{name}.schema.json").read_text())
    assert checked_in == SCHEMAS[name].model_json_schema()
