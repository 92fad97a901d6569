"""Hand-computed costs for every token kind and provider, exact to 1e-12 USD."""

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

from modelyard.core._exceptions import ConfigError
from schemas import Result
from workers.sink.pricing import Meter, PriceCatalog

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
        job_id="j",
        attempt=1,
        tenant="t",
        task_type="other",
        pool="p",
        provider="x",
        model=model,
        status="ok",
        usage=usage,
        latency_ms=1.0,
        completed_at=at,
        batch=batch,
    )


@pytest.fixture
def catalog(tmp_path: Path) -> PriceCatalog:
    for name, text in [("anthropic", ANTHROPIC), ("openai", OPENAI), ("vllm", SELF_HOSTED)]:
        (tmp_path / f"{name}.yaml").write_text(text)
    return PriceCatalog.load(tmp_path, reference_model="m-anthropic")


def test_anthropic_every_token_kind(catalog: PriceCatalog) -> None:
    cost = catalog.cost(
        result(
            "m-anthropic",
            input_tokens=1234,
            cached_input_tokens=5000,
            cache_write_tokens=777,
            output_tokens=321,
        )
    )
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
    cost = catalog.cost(
        result("m-openai", input_tokens=1, cached_input_tokens=3, output_tokens=700, reasoning_tokens=500)
    )
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
    assert (
        catalog.version
        == "anthropic@2026-12-01,distilled@2026-11-01,openai@2026-12-01,recorded@2024-06-01,vllm@2026-11-01"
    )


def test_every_registered_student_version_is_priced_as_the_student_on_cpu() -> None:
    catalog = PriceCatalog.load(reference_model="claude-sonnet-5")
    v1 = catalog.cost(result("student@classification-v1", input_tokens=1_000_000))
    v7 = catalog.cost(result("student@classification-v7", input_tokens=1_000_000))
    frontier = catalog.cost(result("claude-sonnet-5", input_tokens=1_000_000))
    assert (
        v1.self_hosted and v1.total_usd == v7.total_usd > 0 and v1.catalog_version == "distilled@2026-11-01"
    )
    assert v1.total_usd * 100 < frontier.total_usd


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "provider: p\nversion: x\nmodels:\n  m: [{effective_from: 2026-01-01, input: abc, cached_input: 0, output: 1}]\n",
            "models.m.0.input",
        ),
        (
            "provider: p\nversion: x\nmodels:\n  m: [{effective_from: 2026-01-01, input: 1}]\n",
            "cached_input and output are required",
        ),
        (
            "provider: p\nversion: x\nbatch_discount: '1.5'\nmodels:\n  m: [{effective_from: 2026-01-01}]\n",
            "batch_discount",
        ),
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


# --- batch pricing in whole ledger units (1e-12 USD): the same figures as `cost`, column by column ---

UNITS = 10**12
SEVENTH = """
provider: vllm
version: v2
self_hosted: {gpu_hour_usd: "2.50", tokens_per_second: 7}
models:
  m-seventh:
    - {effective_from: 2025-01-01}
"""


def test_price_columns_hold_hand_computed_units(catalog: PriceCatalog) -> None:
    rows = [
        result(
            "m-anthropic",
            input_tokens=1234,
            cached_input_tokens=5000,
            cache_write_tokens=777,
            output_tokens=321,
        ),
        result(
            "m-openai",
            batch=True,
            input_tokens=1,
            cached_input_tokens=3,
            output_tokens=700,
            reasoning_tokens=500,
        ),
        result("mystery", input_tokens=10),
    ]
    priced = catalog.price(rows)
    # anthropic: 1234 * $3/M = 3,702,000,000 units (0.003702 USD), 5000 * 0.30 = 1,500,000,000, ...
    assert (priced.input[0], priced.cached_input[0], priced.cache_write[0], priced.output[0]) == (
        3_702_000_000,
        1_500_000_000,
        2_913_750_000,
        4_815_000_000,
    )
    assert priced.total[0] == priced.reference[0] == 12_930_750_000 and priced.savings[0] == 0
    # openai at half price: 1 * 1.25 / 2 = 0.625 USD/M -> 625,000 units; 200 visible * 5 -> 1e9; 500 reasoning * 6 -> 3e9
    assert (priced.input[1], priced.cached_input[1], priced.output[1], priced.reasoning[1]) == (
        625_000,
        187_500,
        1_000_000_000,
        3_000_000_000,
    )
    assert priced.catalog_version == ["anthropic@v7", "openai@v3", "unpriced"]
    assert (priced.total[2], priced.reference_model[2], priced.self_hosted) == (0, "", [0, 0, 0])


@pytest.mark.parametrize("batch", [False, True])
def test_price_equals_decimal_cost_for_every_model_kind_and_date(tmp_path: Path, batch: bool) -> None:
    for name, text in [
        ("anthropic", ANTHROPIC),
        ("openai", OPENAI),
        ("vllm", SELF_HOSTED),
        ("seventh", SEVENTH),
    ]:
        (tmp_path / f"{name}.yaml").write_text(text)
    catalog = PriceCatalog.load(tmp_path, reference_model="m-anthropic")
    rows = [
        result(
            model,
            at=at,
            batch=batch,
            input_tokens=n * 7919 % 100_003,
            cached_input_tokens=n * 31 % 977,
            cache_write_tokens=n % 13,
            output_tokens=n * 13 % 4001,
            reasoning_tokens=n * 17 % 5000,
        )
        for n, (model, at) in enumerate(
            [
                (m, d)
                for m in ("m-anthropic", "m-openai", "m-slm", "m-seventh", "mystery")
                for d in (MAY, JULY)
            ]
            * 40
        )
    ]
    priced = catalog.price(rows)
    for i, row in enumerate(rows):
        cost = catalog.cost(row)
        expected = [
            cost.input_usd,
            cost.cached_input_usd,
            cost.cache_write_usd,
            cost.output_usd,
            cost.reasoning_usd,
            cost.total_usd,
            cost.reference_usd,
            cost.savings_usd,
        ]
        got = [
            priced.input[i],
            priced.cached_input[i],
            priced.cache_write[i],
            priced.output[i],
            priced.reasoning[i],
            priced.total[i],
            priced.reference[i],
            priced.savings[i],
        ]
        assert got == [int(amount * UNITS) for amount in expected], (row.model, row.usage)
        assert (priced.catalog_version[i], priced.self_hosted[i], priced.reference_model[i]) == (
            cost.catalog_version,
            int(cost.self_hosted),
            cost.reference_model,
        )


def test_a_rate_that_is_not_whole_units_rounds_half_even_like_decimal(tmp_path: Path) -> None:
    (tmp_path / "seventh.yaml").write_text(SEVENTH)
    catalog = PriceCatalog.load(tmp_path)
    # 2.50 USD / (7 tok/s * 3600 s) = 0.0000992063492063... USD per token; 1000 tokens -> 0.099206349206 USD
    priced = catalog.price([result("m-seventh", input_tokens=1000)])
    assert priced.input == [99_206_349_206] and priced.total == [99_206_349_206]


def test_whole_unit_rates_hand_over_to_decimal_beyond_28_digits() -> None:
    meter = Meter.of(Decimal("15"), Decimal(1))
    assert meter.per_token == 15_000_000 and meter(1_000) == 15_000_000_000
    assert meter(meter.max_tokens) == 15_000_000 * meter.max_tokens
    with pytest.raises(
        InvalidOperation
    ):  # Decimal's own verdict on an amount past 28 digits, as `cost` gives it
        meter(meter.max_tokens + 1)


def test_no_results_price_to_empty_columns(catalog: PriceCatalog) -> None:
    assert len(catalog.price([])) == 0


# --- the price file format: defaults that never price a kind at $0, tiers, effective dates ---

TIERED = """
provider: anthropic
version: t1
batch_discount: "0.5"
models:
  m-tiered:
    - effective_from: 2026-01-01
      input: "3"
      cached_input: "0.3"
      cache_write: "3.75"
      cache_write_1h: "6"
      output: "15"
      long_context: {above_input_tokens: 1000, input: "6", cached_input: "0.6", cache_write: "7.5", cache_write_1h: "12", output: "22.5"}
      source: "a test"
  m-plain:
    - {effective_from: 2026-01-01, input: "2", cached_input: "0.2", output: "8"}
"""


def test_unset_cache_write_rates_default_to_input_never_zero(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TIERED)
    catalog = PriceCatalog.load(tmp_path)
    cost = catalog.cost(result("m-plain", cache_write_tokens=1000, cache_write_1h_tokens=400))
    assert cost.cache_write_usd == Decimal("0.002") and cost.cache_write_1h_usd == Decimal("0.0008")


def test_one_hour_writes_are_part_of_the_cache_writes(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TIERED)
    cost = PriceCatalog.load(tmp_path).cost(
        result("m-tiered", cache_write_tokens=500, cache_write_1h_tokens=200)
    )
    # 300 five-minute writes * $3.75/M + 200 one-hour writes * $6/M
    assert (cost.cache_write_usd, cost.cache_write_1h_usd) == (Decimal("0.002325"), Decimal("0.0012"))
    assert cost.total_usd == Decimal("0.002325")


@pytest.mark.parametrize("batch", [False, True])
def test_the_long_context_tier_prices_the_whole_request(tmp_path: Path, batch: bool) -> None:
    (tmp_path / "t.yaml").write_text(TIERED)
    catalog = PriceCatalog.load(tmp_path)
    at = result("m-tiered", batch=batch, input_tokens=600, cached_input_tokens=400, output_tokens=100)
    over = result(
        "m-tiered",
        batch=batch,
        input_tokens=600,
        cached_input_tokens=400,
        cache_write_tokens=1,
        output_tokens=100,
    )
    half = Decimal("0.5") if batch else Decimal(1)
    assert catalog.cost(at).total_usd == (Decimal("0.0018") + Decimal("0.00012") + Decimal("0.0015")) * half
    assert (
        catalog.cost(over).total_usd
        == (Decimal("0.0036") + Decimal("0.00024") + Decimal("0.0000075") + Decimal("0.00225")) * half
    )
    priced = catalog.price([at, over, at])
    assert priced.long_context == [0, 1, 0]
    assert priced.total == [int(catalog.cost(r).total_usd * UNITS) for r in (at, over, at)]


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (
            "{effective_from: 2026-01-01, input: 1, cached_input: 1, output: 1, long_context: {above_input_tokens: 10, input: 2}}",
            "models.m.0.long_context: input, cached_input and output are required",
        ),
        (
            "{effective_from: 2026-01-01, input: 1, cached_input: 1, output: 1, long_context: {above_input_tokens: 0, input: 2, cached_input: 2, output: 2}}",
            "above_input_tokens",
        ),
        (
            "{effective_from: 2026-01-01, input: 1, cached_input: 1, output: 1, cache_write_1h: -1}",
            "cache_write_1h",
        ),
    ],
)
def test_bad_tiers_name_the_field(tmp_path: Path, entry: str, match: str) -> None:
    (tmp_path / "p.yaml").write_text(f"provider: p\nversion: x\nmodels:\n  m:\n    - {entry}\n")
    with pytest.raises(ConfigError, match=match):
        PriceCatalog.load(tmp_path)


def test_every_bundled_anthropic_entry_prices_one_hour_writes_itself() -> None:
    catalog = PriceCatalog.load()
    for model, (prices, entries) in catalog.by_model.items():
        if prices.provider == "anthropic":
            for entry in entries:
                assert entry.cache_write_1h is not None and entry.cache_write_1h == 2 * entry.input, model
                assert entry.cache_write == entry.input * Decimal("1.25") and entry.source, model
