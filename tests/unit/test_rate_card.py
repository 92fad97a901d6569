"""RateCard: the list rates budgets estimate a call with before it is made (modelyard/core/rate_card.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core._exceptions import ConfigError
from modelyard.core.rate_card import RateCard

DAY = date(2026, 11, 24)


def test_bundled_prices_estimate_input_plus_the_whole_output_budget() -> None:
    card = RateCard.load()
    # claude-sonnet-5: $3/M input, $15/M output
    assert card.estimate("claude-sonnet-5", 1000, 256, DAY) == Decimal("0.006840")
    # self-hosted vLLM: $2.50 an hour over 10,000 tokens/s, every token alike
    assert card.estimate("HuggingFaceTB/SmolLM2-135M-Instruct", 36_000, 0, DAY) == Decimal("0.0025")


def test_the_entry_in_force_on_the_day_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "provider: x\nversion: '1'\nmodels:\n  m:\n"
        "    - {effective_from: 2026-01-01, input: '1', cached_input: '0', output: '2'}\n"
        "    - {effective_from: 2026-06-01, input: '10', cached_input: '0', output: '20'}\n"
        "aliases:\n  m-latest: m\n"
    )
    card = RateCard.load(tmp_path)
    assert card.estimate("m", 1_000_000, 0, date(2026, 5, 31)) == 1
    assert card.estimate("m-latest", 0, 1_000_000, date(2026, 6, 1)) == 20
    assert card.estimate("m@v3", 1_000_000, 0, date(2025, 1, 1)) == 1  # before any entry: the first


def test_an_unknown_model_is_estimated_at_the_dearest_rates_so_budgets_never_under_reserve() -> None:
    card = RateCard.load()
    assert not card.knows("gpt-9-ultra")
    dearest = card.rate("gpt-9-ultra", DAY)
    assert all(dearest.output >= card.rate(m, DAY).output for m in ("claude-sonnet-5", "gpt-5-mini"))


def test_a_price_file_without_rates_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "provider: x\nversion: '1'\nmodels:\n  m:\n    - {effective_from: 2026-01-01}\n"
    )
    with pytest.raises(ConfigError, match="bad.yaml: models.m"):
        RateCard.load(tmp_path)
