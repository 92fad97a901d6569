"""Every token kind, from each provider's own usage fields as its SDK returns them, priced against hand figures.

The payloads (tests/fixtures/responses) are in the shapes the official SDKs parse: each is validated by the
SDK's own type first, then read by the backend code the pools run and priced by the bundled catalog.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types.chat import ChatCompletion

from modelyard.core.settings import load_settings
from schemas import Result, TaskType, Usage
from workers.pools.backends.anthropic_messages import completion_from_message
from workers.pools.backends.base import Completion
from workers.pools.backends.openai_chat import ChatCompletionsDialect
from workers.sink.pricing import PriceCatalog

RESPONSES = Path(__file__).resolve().parents[1] / "fixtures" / "responses"
CATALOG = PriceCatalog.load(reference_model="claude-sonnet-5")
AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def anthropic(name: str) -> Completion:
    return completion_from_message(Message.model_validate(json.loads((RESPONSES / name).read_text())))


def anthropic_batch(name: str) -> Completion:
    line = MessageBatchIndividualResponse.model_validate(json.loads((RESPONSES / name).read_text()))
    assert line.result.type == "succeeded"
    return completion_from_message(line.result.message)


def openai_body(payload: dict) -> Completion:
    ChatCompletion.model_validate(payload)  # the shape the SDK returns
    settings = load_settings()
    dialect = ChatCompletionsDialect("openai", settings.providers["openai"], settings.pools["frontier"])
    return dialect.completion(payload, TaskType.CLASSIFICATION)


def result(completion: Completion, batch: bool = False) -> Result:
    return Result(
        job_id="j",
        attempt=1,
        tenant="t",
        task_type="classification",
        pool="frontier",
        provider="p",
        model=completion.model,
        status="ok",
        usage=completion.usage,
        latency_ms=1.0,
        completed_at=AT,
        batch=batch,
    )


def test_anthropic_cache_writes_of_both_ttls_are_priced_at_their_own_rates() -> None:
    completion = anthropic("anthropic_message_cache_ttls.json")
    assert completion.model == "claude-sonnet-4-5-20250929" and completion.output == "billing"
    assert completion.usage == Usage(
        input_tokens=2095,
        cached_input_tokens=12000,
        cache_write_tokens=3000,
        cache_write_1h_tokens=2000,
        output_tokens=503,
    )
    cost = CATALOG.cost(result(completion))
    assert cost.catalog_model == "claude-sonnet-4-5" and cost.catalog_version == "anthropic@2026-12-01"
    assert cost.input_usd == Decimal("0.006285")  # 2095 * $3.00/M
    assert cost.cached_input_usd == Decimal("0.0036")  # 12000 * $0.30/M
    assert cost.cache_write_usd == Decimal("0.01575")  # 1000 * $3.75/M (5 min) + 2000 * $6.00/M (1 hour)
    assert cost.cache_write_1h_usd == Decimal("0.012")
    assert cost.output_usd == Decimal("0.007545")  # 503 * $15/M
    assert cost.total_usd == Decimal("0.03318")
    # the reference, claude-sonnet-5 ($2 / $0.20 / $2.50 / $4 / $10): 0.00419 + 0.0024 + 0.0025 + 0.008 + 0.00503
    assert cost.reference_usd == Decimal("0.02212") and cost.savings_usd == Decimal("-0.01106")


def test_anthropic_long_context_prices_the_whole_request_at_the_long_rates() -> None:
    completion = anthropic("anthropic_message_long_context.json")
    assert completion.usage.reasoning_tokens == 1200  # output_tokens_details.thinking_tokens
    cost = CATALOG.cost(result(completion))
    # prompt 150,000 + 60,000 cache reads = 210,000 > 200,000: $6 input, $0.60 reads, $22.50 output
    assert cost.long_context
    assert (cost.input_usd, cost.cached_input_usd) == (Decimal("0.9"), Decimal("0.036"))
    assert (cost.output_usd, cost.reasoning_usd) == (Decimal("0.018"), Decimal("0.027"))  # 800 + 1200 tokens
    assert cost.total_usd == Decimal("0.981")


def test_a_prompt_of_exactly_the_threshold_is_standard() -> None:
    usage = {"input_tokens": 150_000, "cached_input_tokens": 50_000, "output_tokens": 2000}
    cost = CATALOG.cost(result(Completion("", Usage(**usage), "claude-sonnet-4-5")))
    assert not cost.long_context and cost.total_usd == Decimal("0.495")  # 0.45 + 0.015 + 0.03
    # one more cache write tips the whole request over, output included
    over = CATALOG.cost(result(Completion("", Usage(**usage, cache_write_tokens=1), "claude-sonnet-4-5")))
    assert over.long_context and over.total_usd == Decimal("0.9") + Decimal("0.03") + Decimal(
        "0.0000075"
    ) + Decimal("0.045")


def test_haiku_5_5_prices_its_two_prompt_bands() -> None:
    small = Usage(input_tokens=100_000, output_tokens=1000)
    large = Usage(input_tokens=100_001, output_tokens=1000)
    assert CATALOG.cost(result(Completion("", small, "claude-haiku-5-5"))).total_usd == Decimal("0.0105")
    assert CATALOG.cost(result(Completion("", large, "claude-haiku-5-5"))).total_usd == Decimal("0.0525005")


def test_anthropic_batch_result_with_one_hour_writes_is_half_price() -> None:
    completion = anthropic_batch("anthropic_batch_results.jsonl")
    assert (completion.usage.cache_write_tokens, completion.usage.cache_write_1h_tokens) == (1200, 1200)
    cost = CATALOG.cost(result(completion, batch=True))
    # Haiku 4.5 at 50%: 1800 * $0.50/M + 1200 * $1.00/M (1-hour writes) + 40 * $2.50/M
    assert (cost.input_usd, cost.cache_write_usd, cost.output_usd) == (
        Decimal("0.0009"),
        Decimal("0.0012"),
        Decimal("0.0001"),
    )
    assert cost.total_usd == Decimal("0.0022")


def test_openai_cached_input_and_reasoning_tokens() -> None:
    completion = openai_body(json.loads((RESPONSES / "openai_chat_reasoning.json").read_text()))
    assert completion.output == "billing"
    assert completion.usage == Usage(
        input_tokens=1300, cached_input_tokens=3200, output_tokens=1300, reasoning_tokens=1024
    )
    cost = CATALOG.cost(result(completion))
    assert cost.catalog_model == "gpt-5-mini" and cost.catalog_version == "openai@2026-12-01"
    # 1300 * $0.25/M + 3200 * $0.025/M + 276 visible * $2/M + 1024 reasoning * $2/M (billed as output)
    assert (cost.input_usd, cost.cached_input_usd) == (Decimal("0.000325"), Decimal("0.00008"))
    assert (cost.output_usd, cost.reasoning_usd) == (Decimal("0.000552"), Decimal("0.002048"))
    assert cost.total_usd == Decimal("0.003005")


def test_openai_batch_output_line_is_half_price() -> None:
    line = json.loads((RESPONSES / "openai_batch_output.jsonl").read_text())
    completion = openai_body(line["response"]["body"])
    cost = CATALOG.cost(result(completion, batch=True))
    # gpt-4o at 50%: 976 uncached * $1.25/M + 1024 cached * $0.625/M + 100 * $5/M
    assert (cost.input_usd, cost.cached_input_usd, cost.output_usd) == (
        Decimal("0.00122"),
        Decimal("0.00064"),
        Decimal("0.0005"),
    )
    assert cost.total_usd == Decimal("0.00236")


def test_openai_cache_writes_are_split_from_input_and_cost_the_input_rate() -> None:
    payload = json.loads((RESPONSES / "openai_chat_reasoning.json").read_text())
    payload["usage"]["prompt_tokens_details"]["cache_write_tokens"] = 300
    completion = openai_body(payload)
    assert (completion.usage.input_tokens, completion.usage.cache_write_tokens) == (1000, 300)
    assert CATALOG.cost(result(completion)).total_usd == Decimal("0.003005")  # writes at $0.25/M, as input


@pytest.mark.parametrize("batch", [False, True])
def test_columns_give_the_decimal_figures_for_every_payload(batch: bool) -> None:
    payload = json.loads((RESPONSES / "openai_chat_reasoning.json").read_text())
    rows = [
        result(anthropic("anthropic_message_cache_ttls.json"), batch),
        result(anthropic("anthropic_message_long_context.json"), batch),
        result(anthropic_batch("anthropic_batch_results.jsonl"), batch),
        result(openai_body(payload), batch),
        result(Completion("", Usage(input_tokens=150_000, cached_input_tokens=50_000), "claude-sonnet-4-5")),
    ]
    priced = CATALOG.price(rows)
    units = 10**12
    for i, row in enumerate(rows):
        cost = CATALOG.cost(row)
        assert [priced.total[i], priced.cache_write[i], priced.cache_write_1h[i], priced.reference[i]] == [
            int(cost.total_usd * units),
            int(cost.cache_write_usd * units),
            int(cost.cache_write_1h_usd * units),
            int(cost.reference_usd * units),
        ]
        assert (priced.long_context[i], priced.catalog_model[i], priced.priced[i]) == (
            int(cost.long_context),
            cost.catalog_model,
            1,
        )
    assert priced.long_context == [0, 1, 0, 0, 0]
