"""Hand-computed costs for every token kind and provider, exact to 1e-12 USD."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard._exceptions import ConfigError
from schemas import Result
from workers.pricing import PriceCatalog

ANTHROPIC = """
provider: anthropic
version: v7
batch_discount: "0.5"
models:
  m-anthropic:
    - {effective_from: 2026-01-01, input: "3", cached_input: "0.30", cache_write: "3.75", output: "15"}
    - {effective_from: 2026-06-01, input: "2", cached_input: "0.20", cache_write: "2.50", output: "10"}
"""
OPENAI = """
provider: openai
version: v3
batch_discount: "0.5"
models:
  m-openai:
    - {effective_from: 2025-01-01, input: "1.25", cached_input: "0.125", output: "10", reasoning: "12"}
"""
SELF_HOSTED = """
provider: vllm
version: v1
self_hosted: {gpu_hour_usd: "3.60", tokens_per_second: 1000}
models:
  m-slm:
    - {effective_from: 2025-01-01}
"""
MAY, JULY = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)


def result(model: str, at: datetime = MAY, batch: bool = False, **usage: int) -> Result:
    return Result(
        job_id="j", attempt=1, tenant="t", task_type="other", pool="p", provider="x", model=model, status="ok",
        usage=usage, latency_ms=1.0, completed_at=at, batch=batch,
    )


@pytest.fixture
def catalog(tmp_path: Path) -> PriceCatalog:
    for name, text in [("anthropic", ANTHROPIC), ("openai", OPENAI), ("vllm", SELF_HOSTED)]:
        (tmp_path / f"{name}.yaml").write_text(text)
    return PriceCatalog.load(tmp_path, reference_model="m-anthropic")


def test_anthropic_every_token_kind(catalog: PriceCatalog) -> None:
    cost = catalog.cost(result("m-anthropic", input_tokens=1234, cached_input_tokens=5000, cache_write_tokens=777, output_tokens=321))
    assert cost.input_usd == Decimal("0.003702")  # 1234 * 3 / 1e6
    assert cost.cached_input_usd == Decimal("0.0015")  # 5000 * 0.30 / 1e6
    assert cost.cache_write_usd == Decimal("0.00291375")  # 777 * 3.75 / 1e6
    assert cost.output_usd == Decimal("0.004815")  # 321 * 15 / 1e6
    assert cost.total_usd == Decimal("0.01293075")
    assert cost.catalog_version == "anthropic@v7"
    assert cost.savings_usd == 0  # it is the reference model


def test_effective_dates_pick_the_price_in_force(catalog: PriceCatalog) -> None:
    assert catalog.cost(result("m-anthropic", at=JULY, input_tokens=1_000_000)).total_usd == Decimal("2")


def test_openai_reasoning_tokens_are_part_of_output_at_their_own_price(catalog: PriceCatalog) -> None:
    cost = catalog.cost(result("m-openai", input_tokens=1, cached_input_tokens=3, output_tokens=700, reasoning_tokens=500))
    assert cost.input_usd == Decimal("0.00000125")
    assert cost.cached_input_usd == Decimal("0.000000375")
    assert cost.output_usd == Decimal("0.002")  # 200 visible output tokens * 10 / 1e6
    assert cost.reasoning_usd == Decimal("0.006")  # 500 * 12 / 1e6
    assert cost.total_usd == Decimal("0.008001625")


def test_batch_discount_halves_every_kind(catalog: PriceCatalog) -> None:
    normal = catalog.cost(result("m-openai", input_tokens=1000, output_tokens=100))
    batch = catalog.cost(result("m-openai", batch=True, input_tokens=1000, output_tokens=100))
    assert batch.total_usd * 2 == normal.total_usd == Decimal("0.00225")


def test_self_hosted_cost_comes_from_gpu_hour_and_throughput(catalog: PriceCatalog) -> None:
    # $3.60 / (1000 tok/s * 3600 s) = $0.000001 per token
    cost = catalog.cost(result("m-slm", input_tokens=900, cached_input_tokens=50, output_tokens=50))
    assert cost.total_usd == Decimal("0.001") and cost.self_hosted
    assert cost.catalog_version == "vllm@v1"
    # reference: the same tokens on m-anthropic in May: 900*3 + 50*0.3 + 50*15 = 3465 per 1e6
    assert cost.reference_usd == Decimal("0.003465")
    assert cost.savings_usd == Decimal("0.002465")


def test_unknown_model_is_marked_unpriced(catalog: PriceCatalog) -> None:
    cost = catalog.cost(result("mystery", input_tokens=10))
    assert cost.total_usd == 0 and cost.catalog_version == "unpriced"


def test_bundled_catalog_prices_the_default_pools() -> None:
    catalog = PriceCatalog.load(reference_model="claude-sonnet-5")
    assert {"claude-sonnet-5", "HuggingFaceTB/SmolLM2-135M-Instruct"} <= set(catalog.by_model)
    assert catalog.version == "anthropic@2026-11-01,distilled@2026-11-01,openai@2026-11-01,vllm@2026-11-01"


def test_every_registered_student_version_is_priced_as_the_student_on_cpu() -> None:
    catalog = PriceCatalog.load(reference_model="claude-sonnet-5")
    v1 = catalog.cost(result("student@classification-v1", input_tokens=1_000_000))
    v7 = catalog.cost(result("student@classification-v7", input_tokens=1_000_000))
    frontier = catalog.cost(result("claude-sonnet-5", input_tokens=1_000_000))
    assert v1.self_hosted and v1.total_usd == v7.total_usd > 0 and v1.catalog_version == "distilled@2026-11-01"
    assert v1.total_usd * 100 < frontier.total_usd


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("provider: p\nversion: x\nmodels:\n  m: [{effective_from: 2026-01-01, input: abc, cached_input: 0, output: 1}]\n", "models.m.0.input"),
        ("provider: p\nversion: x\nmodels:\n  m: [{effective_from: 2026-01-01, input: 1}]\n", "cached_input and output are required"),
        ("provider: p\nversion: x\nbatch_discount: '1.5'\nmodels:\n  m: [{effective_from: 2026-01-01}]\n", "batch_discount"),
    ],
)
def test_bad_price_file_names_the_field(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        PriceCatalog.load(tmp_path)


def test_unknown_reference_model_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ANTHROPIC)
    with pytest.raises(ConfigError, match="reference_model"):
        PriceCatalog.load(tmp_path, reference_model="nope")
