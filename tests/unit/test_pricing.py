from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard._exceptions import ConfigError
from schemas import Result
from workers.pricing import PriceCatalog

CATALOG = """
version: test-1
models:
  m-anthropic: {provider: anthropic, input: "3", cached_input: "0.30", cache_write: "3.75", output: "15"}
  m-openai: {provider: openai, input: "1.25", cached_input: "0.125", output: "10"}
"""


def result(model: str, **usage: int) -> Result:
    return Result(
        job_id="j", attempt=1, tenant="t", task_type="other", pool="p", provider="x", model=model, status="ok",
        usage=usage, latency_ms=1.0, completed_at=datetime.now(UTC),
    )


@pytest.fixture
def catalog(tmp_path: Path) -> PriceCatalog:
    path = tmp_path / "prices.yaml"
    path.write_text(CATALOG)
    return PriceCatalog.load(path)


def test_every_token_kind_is_priced_exactly(catalog: PriceCatalog) -> None:
    cost = catalog.cost(result("m-anthropic", input_tokens=1234, cached_input_tokens=5000, cache_write_tokens=777, output_tokens=321))
    assert cost.input_usd == Decimal("0.003702")  # 1234 * 3 / 1e6
    assert cost.cached_input_usd == Decimal("0.0015")  # 5000 * 0.30 / 1e6
    assert cost.cache_write_usd == Decimal("0.00291375")  # 777 * 3.75 / 1e6
    assert cost.output_usd == Decimal("0.004815")  # 321 * 15 / 1e6
    assert cost.total_usd == Decimal("0.01293075")
    assert cost.catalog_version == "test-1"


def test_openai_prices(catalog: PriceCatalog) -> None:
    cost = catalog.cost(result("m-openai", input_tokens=1, cached_input_tokens=3, output_tokens=7))
    assert cost.total_usd == Decimal("0.00000125") + Decimal("0.000000375") + Decimal("0.00007")


def test_unknown_model_is_marked_unpriced(catalog: PriceCatalog) -> None:
    cost = catalog.cost(result("mystery", input_tokens=10))
    assert cost.total_usd == 0 and cost.catalog_version == "unpriced@test-1"


def test_bundled_catalog_loads() -> None:
    assert "claude-sonnet-5" in PriceCatalog.load().models


def test_bad_catalog_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: x\nmodels:\n  m: {provider: p, input: abc, cached_input: 0, output: 1}\n")
    with pytest.raises(ConfigError, match="models.m.input"):
        PriceCatalog.load(path)
