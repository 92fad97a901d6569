"""Model ids as providers report them resolve to catalog entries by the explicit rules of model_ids.py."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from modelyard.core._exceptions import ConfigError
from schemas import Result
from workers.sink.model_ids import ModelIds, Resolution
from workers.sink.pricing import PriceCatalog

BUNDLED = PriceCatalog.load(reference_model="claude-sonnet-5")


@pytest.mark.parametrize(
    ("model_id", "model", "rule"),
    [
        ("gpt-5-mini", "gpt-5-mini", "exact"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini", "dated"),  # the longest known prefix, never gpt-5
        ("gpt-5-2025-08-07", "gpt-5", "dated"),
        ("gpt-5-nano-2025-08-07", "gpt-5-nano", "dated"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "dated"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4", "dated"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5", "dated"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", "exact"),  # a snapshot with prices of its own
        ("gpt-4o-2024-08-06", "gpt-4o", "dated"),
        ("gpt-5-chat-latest", "gpt-5", "alias"),
        ("claude-sonnet-4-0", "claude-sonnet-4", "alias"),
        ("openai/gpt-4o", "gpt-4o", "qualified+exact"),
        ("openai/gpt-5-mini-2025-08-07", "gpt-5-mini", "qualified+dated"),
        ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "qualified+dated"),
        ("anthropic/claude-sonnet-4-0", "claude-sonnet-4", "qualified+alias"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "exact"),
        (
            "vllm/HuggingFaceTB/SmolLM2-135M-Instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "qualified+exact",
        ),
        ("student@classification-v3", "student", "tagged"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5", "tagged"),
    ],
)
def test_provider_ids_resolve_to_their_catalog_entry(model_id: str, model: str, rule: str) -> None:
    assert BUNDLED.resolve(model_id) == Resolution(model, rule)


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic/gpt-4o",  # the qualifier names another provider: never across families
        "openai/claude-haiku-4-5",
        "gpt-5-pro",  # a known prefix followed by something that is not a date
        "gpt-5-mini-fast-2025-08-07",
        "gpt-5-2025-13-01",  # not a calendar date
        "gpt-5-20250230",
        "gpt-5-2025-0807",  # neither -YYYY-MM-DD nor -YYYYMMDD
        "gpt-5-250807",
        "gpt-5-2025-08-07-preview",
        "GPT-5",  # ids are case-sensitive, as the providers' are
        "azure/gpt-4o",  # not a provider of the catalog: the whole id is looked up, and is unknown
        "claude-sonnet-4-5@",
        "",
    ],
)
def test_ids_no_rule_covers_have_no_price(model_id: str) -> None:
    assert BUNDLED.resolve(model_id) is None


def test_a_dated_id_is_not_priced_as_a_shorter_model_when_its_own_model_is_missing() -> None:
    ids = ModelIds({"gpt-5": "openai"}, {})
    assert ids.resolve("gpt-5-2025-08-07") == Resolution("gpt-5", "dated")
    assert ids.resolve("gpt-5-nano-2025-08-07") is None


def result(model: str, **usage: int) -> Result:
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
        completed_at=datetime(2026, 5, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("dated", "model"),
    [
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("openai/gpt-4o", "gpt-4o"),
    ],
)
def test_a_dated_id_costs_what_its_model_costs(dated: str, model: str) -> None:
    usage = {"input_tokens": 1200, "cached_input_tokens": 300, "output_tokens": 80}
    by_id, by_model = BUNDLED.cost(result(dated, **usage)), BUNDLED.cost(result(model, **usage))
    assert by_id.total_usd == by_model.total_usd > 0
    assert by_id.catalog_version == by_model.catalog_version != "unpriced"
    priced = BUNDLED.price([result(dated, **usage), result(model, **usage)])
    assert priced.total[0] == priced.total[1] > 0


def test_gpt_4o_launch_snapshot_keeps_its_own_price() -> None:
    # 1000 input tokens: $5.00/M for gpt-4o-2024-05-13, $2.50/M for gpt-4o (and its later snapshots)
    assert BUNDLED.cost(result("gpt-4o-2024-05-13", input_tokens=1000)).input_usd == Decimal("0.005")
    assert BUNDLED.cost(result("gpt-4o-2024-11-20", input_tokens=1000)).input_usd == Decimal("0.0025")


PRICES = "provider: p\nversion: x\nmodels:\n  m: [{effective_from: 2026-01-01, input: 1, cached_input: 1, output: 1}]\n"


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ([PRICES + "aliases: {a: nope}\n"], "aliases.a: 'nope' is not a model of this file"),
        ([PRICES + "aliases: {m: m}\n"], "aliases.m: already a model"),
        ([PRICES, PRICES.replace("provider: p", "provider: q")], "model 'm' is listed twice"),
        (
            [
                PRICES + "aliases: {a: m}\n",
                PRICES.replace("provider: p", "provider: q").replace("  m:", "  n:") + "aliases: {a: n}\n",
            ],
            "alias 'a' is listed twice",
        ),
    ],
)
def test_ambiguous_catalogs_are_refused(tmp_path: Path, files: list[str], match: str) -> None:
    for i, text in enumerate(files):
        (tmp_path / f"{i}.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        PriceCatalog.load(tmp_path)


def test_a_dated_reference_model_is_accepted() -> None:
    catalog = PriceCatalog.load(reference_model="claude-sonnet-4-5-20250929")
    assert catalog.cost(result("gpt-5-mini", input_tokens=1000)).reference_usd > 0
