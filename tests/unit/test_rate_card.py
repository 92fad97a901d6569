"""RateCard: the list rates budgets estimate a call with before it is made (modelyard/core/rate_card.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core._exceptions import ConfigError
from modelyard.core.rate_card import RateCard
from modelyard.core.settings import load_settings

DAY = date(2026, 11, 24)


def test_every_bundled_pool_model_has_rates() -> None:
    card, settings = RateCard.load(), load_settings()
    for pool in settings.pools.values():
        assert card.knows(pool.model), pool.model
        rate = card.rate(pool.model, DAY)
        assert rate.output > 0 and card.estimate(pool.model, 1000, 256, DAY) == (
            (rate.input * 1000 + rate.output * 256) / 1_000_000
        ).quantize(Decimal("1e-12"))


def test_input_plus_the_whole_output_budget_and_self_hosted_rates(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "provider: a\nversion: '1'\nmodels:\n  m:\n"
        "    - {effective_from: 2026-01-01, input: '3.00', cached_input: '0.30', output: '15.00', extra: 1}\n"
    )
    (tmp_path / "v.yaml").write_text(
        "provider: v\nversion: '1'\nself_hosted: {gpu_hour_usd: '2.50', tokens_per_second: 10000}\n"
        "models:\n  slm:\n    - {effective_from: 2025-01-01}\n"
    )
    card = RateCard.load(tmp_path)
    assert card.estimate("m", 1000, 256, DAY) == Decimal("0.006840")  # $3/M in, $15/M out
    assert card.estimate("slm", 36_000, 0, DAY) == Decimal("0.0025")  # $2.50 an hour over 10,000 tokens/s


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
