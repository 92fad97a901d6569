"""Providers' usage and cost exports (tests/fixtures/exports, from the public API references) read per day and model."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core._exceptions import InvalidInput
from modelyard.ops.usage_exports import line_item_model, read_export

EXPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "exports"
NOV_29, NOV_30, DEC_1 = date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)


def files(*names: str) -> list[tuple[str, bytes]]:
    return [(name, (EXPORTS / name).read_bytes()) for name in names]


def test_openai_usage_and_costs_sum_per_day_and_model() -> None:
    export = read_export("openai", files("openai_usage_completions.json", "openai_costs.json"))
    assert export.days == [NOV_29, NOV_30]
    line = export.lines[NOV_29, "gpt-5-mini-2025-08-07"]
    # input_tokens includes the cached ones: 9000 - 6400 uncached
    assert (line.input_tokens, line.cached_input_tokens, line.output_tokens, line.requests) == (
        2600,
        6400,
        2600,
        2,
    )
    assert line.usd == Decimal("0.00601") and line.has_usage and line.has_cost


def test_an_ungrouped_openai_cost_counts_for_the_whole_day() -> None:
    export = read_export("openai", files("openai_costs_ungrouped.json"))
    assert dict(export.lines).keys() == {(DEC_1, "")}
    assert export.lines[DEC_1, ""].usd == Decimal("0.06") and not export.lines[DEC_1, ""].has_usage


def test_anthropic_pages_per_line_and_cents() -> None:
    export = read_export("anthropic", files("anthropic_usage_report.jsonl", "anthropic_cost_report.json"))
    first = export.lines[NOV_29, "claude-sonnet-4-5-20250929"]
    assert (first.input_tokens, first.cached_input_tokens, first.cache_write_tokens, first.output_tokens) == (
        2095,
        12000,
        3000,
        503,
    )
    assert first.usd == Decimal("0.03318")  # 3.318 cents
    assert export.lines[NOV_30, "claude-sonnet-4-5-20250929"].usd == Decimal("0.06636")


@pytest.mark.parametrize(
    ("line_item", "model"),
    [
        ("gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06"),
        ("gpt-5-mini-2025-08-07, cached input", "gpt-5-mini-2025-08-07"),
        ("web search tool calls", "web search tool calls"),
        (None, ""),
    ],
)
def test_line_items_name_their_model(line_item: str | None, model: str) -> None:
    assert line_item_model(line_item) == model


@pytest.mark.parametrize(
    ("provider", "text", "match"),
    [
        (
            "openai",
            b'{"object": "page", "data": [{"start_time": 1, "results": [{"object": "organization.costs.result", "amount": {"value": 1, "currency": "eur"}}]}]}',
            "currency",
        ),
        ("openai", b'{"object": "page", "data": [{"results": []}]}', "data.0.start_time"),
        (
            "anthropic",
            b'{"data": [{"starting_at": "2026-11-29T00:00:00Z", "results": [{"output_tokens": 3}]}]}',
            "uncached_input_tokens",
        ),
        ("anthropic", b'{"data": []}\n{not json', "line 2 is not JSON"),
        ("anthropic", b'{"data": []}', "no usage or cost buckets"),
    ],
)
def test_a_bad_export_names_the_field(provider: str, text: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        read_export(provider, [("export.json", text)])


def test_a_file_of_the_other_provider_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a valid anthropic usage or cost export: data.0.start"):
        read_export("anthropic", files("openai_costs.json"))
