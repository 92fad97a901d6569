"""`modelyard costs price RESULT.json`: one Result's priced breakdown, checkable by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from anthropic.types import Message

from modelyard.cli import main
from workers.pools.backends.anthropic_messages import completion_from_message

RESPONSES = Path(__file__).resolve().parents[1] / "fixtures" / "responses"


def result_file(tmp_path: Path, **changes: object) -> Path:
    message = Message.model_validate(
        json.loads((RESPONSES / "anthropic_message_cache_ttls.json").read_text())
    )
    completion = completion_from_message(message)
    record = {
        "job_id": "j-42",
        "attempt": 1,
        "tenant": "acme",
        "task_type": "classification",
        "pool": "frontier",
        "provider": "anthropic",
        "model": completion.model,
        "status": "ok",
        "output": completion.output,
        "usage": completion.usage.model_dump(),
        "latency_ms": 812.0,
        "completed_at": "2026-12-01T09:30:00Z",
        **changes,
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(record))
    return path


def test_prints_every_kind_the_entry_and_the_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["costs", "price", str(result_file(tmp_path))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "catalog entry: claude-sonnet-4-5 (rule: dated), in force from 2025-09-29, anthropic@2026-12-01"
        in out
    )
    assert "standard tier (prompt 17,095 <= 200,000 tokens)" in out
    for line in (
        "input (uncached) │ 2,095 │ 3 │ 0.006285",
        "cache reads │ 12,000 │ 0.3 │ 0.0036",
        "cache writes, 5 min │ 1,000 │ 3.75 │ 0.00375",
        "cache writes, 1 hour │ 2,000 │ 6 │ 0.012",
        "output (visible) │ 503 │ 15 │ 0.007545",
        "total │ 17,598 │ │ 0.03318",
    ):
        assert line in out, line
    assert "reference claude-sonnet-5: 0.02212 for the same tokens; saving on this attempt -0.01106" in out


def test_batch_rates_are_shown_after_the_discount(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "price", str(result_file(tmp_path, batch=True))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "batch discount 50%" in out and "cache writes, 1 hour │ 2,000 │ 3 │ 0.006" in out


def test_an_unpriced_model_says_so_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "price", str(result_file(tmp_path, model="nova-9"))]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "no catalog entry prices 'nova-9'" in out and "priced = 0 (not $0)" in out


def test_a_file_that_is_not_a_result_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["costs", "price", str(result_file(tmp_path, attempt=0))]) == 2
    assert "attempt" in capsys.readouterr().err
