"""Providers' own usage and cost exports, read into one shape: per UTC day and model, tokens by kind and USD.

OpenAI (Administration API, organization usage and costs; shapes as the official SDK's
`openai.types.admin.organization` models):
  GET /v1/organization/usage/completions  a page of buckets {start_time, end_time, results: [
      {object: "organization.usage.completions.result", input_tokens (cache reads and writes included),
       input_cached_tokens, input_cache_write_tokens?, output_tokens, num_model_requests, model?, batch?}]}
  GET /v1/organization/costs              a page of buckets {start_time, end_time, results: [
      {object: "organization.costs.result", amount: {value, currency: "usd"}, line_item?}]}
      A line item ("<model>, <kind>" when grouped by line_item) names its model; without one the amount
      counts for the whole day.
Anthropic (Admin API, usage and cost reports):
  GET /v1/organizations/usage_report/messages  {data: [{starting_at, ending_at, results: [
      {uncached_input_tokens, cache_read_input_tokens, cache_creation: {ephemeral_5m_input_tokens,
       ephemeral_1h_input_tokens}, output_tokens, model?, service_tier?, context_window?}]}], has_more, next_page}
  GET /v1/organizations/cost_report            {data: [{starting_at, ending_at, results: [
      {amount: "<decimal string in cents>", currency: "USD", model?, cost_type?, token_type?, description?}]}]}

A file holds one page, a JSON array of pages, or one page per line (as a paging script saves them); usage and
cost pages may be mixed. A line without a model (the export was not grouped by model) is kept under model ""
and reconciled per day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from modelyard.core._exceptions import InvalidInput

CENTS = Decimal(100)


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OpenAIUsage(Lenient):
    object: Literal["organization.usage.completions.result"]
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    input_cached_tokens: int | None = Field(default=None, ge=0)
    input_cache_write_tokens: int | None = Field(default=None, ge=0)
    num_model_requests: int = Field(default=0, ge=0)
    model: str | None = None


class OpenAIAmount(Lenient):
    value: Decimal
    currency: Literal["usd"]


class OpenAICost(Lenient):
    object: Literal["organization.costs.result"]
    amount: OpenAIAmount
    line_item: str | None = None


class OpenAIBucket(Lenient):
    start_time: int
    results: list[Annotated[OpenAIUsage | OpenAICost, Field(discriminator="object")]]


class OpenAIPage(Lenient):
    object: Literal["page"]
    data: list[OpenAIBucket]


class CacheCreation(Lenient):
    ephemeral_5m_input_tokens: int = Field(default=0, ge=0)
    ephemeral_1h_input_tokens: int = Field(default=0, ge=0)


class AnthropicUsage(Lenient):
    uncached_input_tokens: int = Field(ge=0)
    cache_read_input_tokens: int = Field(ge=0)
    cache_creation: CacheCreation = CacheCreation()
    output_tokens: int = Field(ge=0)
    requests: int | None = Field(default=None, ge=0)
    model: str | None = None


class AnthropicCost(Lenient):
    amount: Decimal  # in cents
    currency: Literal["USD"]
    model: str | None = None


def _anthropic_kind(result: Any) -> str:
    """Cost report rows carry an amount; usage report rows do not."""
    return (
        "cost"
        if isinstance(result, AnthropicCost) or (isinstance(result, dict) and "amount" in result)
        else "usage"
    )


AnthropicResult = Annotated[
    Annotated[AnthropicUsage, Tag("usage")] | Annotated[AnthropicCost, Tag("cost")],
    Discriminator(_anthropic_kind),
]


class AnthropicBucket(Lenient):
    starting_at: datetime
    results: list[AnthropicResult]


class AnthropicPage(Lenient):
    data: list[AnthropicBucket]


@dataclass
class InvoiceLine:
    """What the provider reports for one UTC day and model (model "" when the export has no model)."""

    input_tokens: int = 0  # uncached
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    requests: int = 0
    output_tokens: int = 0
    usd: Decimal = Decimal(0)
    has_usage: bool = False
    has_cost: bool = False

    @property
    def all_input_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens


@dataclass
class Export:
    provider: str
    lines: defaultdict[tuple[date, str], InvoiceLine] = field(
        default_factory=lambda: defaultdict(InvoiceLine)
    )

    @property
    def days(self) -> list[date]:
        return sorted({day for day, _ in self.lines})


def read_export(provider: str, files: list[tuple[str, bytes]]) -> Export:
    """Every page of every file, summed per (day, model)."""
    export = Export(provider)
    page_model: type[BaseModel] = OpenAIPage if provider == "openai" else AnthropicPage
    for name, raw in files:
        for where, page in _pages(name, raw):
            try:
                parsed = page_model.model_validate(page)
            except ValidationError as exc:
                first = exc.errors()[0]
                path = ".".join(str(p) for p in first["loc"])
                raise InvalidInput(
                    f"{where} is not a valid {provider} usage or cost export: {path}: {first['msg']}",
                    field=path,
                ) from exc
            _add(export, parsed)
    if not export.lines:
        raise InvalidInput(f"no usage or cost buckets with results in {', '.join(n for n, _ in files)}")
    return export


def _pages(name: str, raw: bytes) -> list[tuple[str, Any]]:
    try:
        document = orjson.loads(raw)
        pages = document if isinstance(document, list) else [document]
        return [(f"{name} page {i + 1}", page) for i, page in enumerate(pages)]
    except orjson.JSONDecodeError:
        pass
    pages = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                pages.append((f"{name} line {number}", orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"{name} line {number} is not JSON: {exc}", field="files") from exc
    return pages


def _add(export: Export, page: Any) -> None:
    for bucket in page.data:
        day = (
            datetime.fromtimestamp(bucket.start_time, UTC).date()
            if isinstance(bucket, OpenAIBucket)
            else bucket.starting_at.astimezone(UTC).date()
        )
        for result in bucket.results:
            _add_result(export, day, result)


def _add_result(export: Export, day: date, result: Any) -> None:
    if isinstance(result, OpenAIUsage):
        line = export.lines[day, result.model or ""]
        cached, writes = result.input_cached_tokens or 0, result.input_cache_write_tokens or 0
        line.input_tokens += max(result.input_tokens - cached - writes, 0)
        line.cached_input_tokens += cached
        line.cache_write_tokens += writes
        line.output_tokens += result.output_tokens
        line.requests += result.num_model_requests
        line.has_usage = True
    elif isinstance(result, AnthropicUsage):
        line = export.lines[day, result.model or ""]
        line.input_tokens += result.uncached_input_tokens
        line.cached_input_tokens += result.cache_read_input_tokens
        creation = result.cache_creation
        line.cache_write_tokens += creation.ephemeral_5m_input_tokens + creation.ephemeral_1h_input_tokens
        line.output_tokens += result.output_tokens
        line.requests += result.requests or 0
        line.has_usage = True
    elif isinstance(result, OpenAICost):
        line = export.lines[day, line_item_model(result.line_item)]
        line.usd += result.amount.value
        line.has_cost = True
    else:
        line = export.lines[day, result.model or ""]
        line.usd += result.amount / CENTS
        line.has_cost = True


def line_item_model(line_item: str | None) -> str:
    """The model a cost line item names ("gpt-4o-2024-08-06, input" -> "gpt-4o-2024-08-06"); "" without one."""
    if not line_item:
        return ""
    model, comma, _kind = line_item.rpartition(", ")
    return model if comma else line_item
