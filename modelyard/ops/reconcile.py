"""`modelyard costs reconcile`: the ledger against the provider's own usage/cost export, per UTC day and model.

Both sides are keyed by the catalog entry their model id resolves to (the ledger holds the ids the API
answered with, the export names models its own way: dated snapshots, or bare names), else by the id itself.
A day the export does not break down by model (usage or cost lines without one) is compared as one row,
"(all models)". Tokens: input counts every input token (uncached, cache reads, cache writes); output
includes reasoning. USD: the ledger's total against the invoice's amount (OpenAI's costs in USD, Anthropic's
cost report in cents, converted). Unpriced ledger rows are counted: their cost is unknown, not zero.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from modelyard.ops.cost_report import Table
from modelyard.ops.usage_exports import Export, InvoiceLine
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

ALL_MODELS = "(all models)"
LEDGER = """
SELECT toDate(completed_at) AS day, model, count() AS attempts,
       sum(input_tokens + cached_input_tokens + cache_write_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(total_cost_usd) AS usd, countIf(priced = 0) AS unpriced
FROM cost_ledger FINAL
WHERE provider = {provider:String} AND toDate(completed_at) IN {days:Array(Date)}
GROUP BY day, model
"""
COLUMNS = [
    "day",
    "model",
    "attempts",
    "requests",
    "input_ledger",
    "input_invoice",
    "output_ledger",
    "output_invoice",
    "tokens_diff",
    "usd_ledger",
    "usd_invoice",
    "usd_diff",
    "unpriced",
]


@dataclass
class LedgerLine:
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: Decimal = Decimal(0)
    unpriced: int = 0


def reconcile(store: ClickHouseStore, catalog: PriceCatalog, export: Export, ledger_provider: str) -> Table:
    """One row per (day, model): ledger vs invoice tokens and USD, and the differences (ledger - invoice)."""
    rows = store.query(LEDGER, {"provider": ledger_provider, "days": export.days})
    by_model_days = _days_by_model(export)
    ledger: defaultdict[tuple[date, str], LedgerLine] = defaultdict(LedgerLine)
    for day, model, attempts, input_tokens, output_tokens, usd, unpriced in rows:
        line = ledger[day, _key(catalog, model) if day in by_model_days else ALL_MODELS]
        line.attempts += attempts
        line.input_tokens += input_tokens
        line.output_tokens += output_tokens
        line.usd += usd
        line.unpriced += unpriced
    invoice: defaultdict[tuple[date, str], InvoiceLine] = defaultdict(InvoiceLine)
    for (day, model), found in export.lines.items():
        _merge(invoice[day, _key(catalog, model) if day in by_model_days else ALL_MODELS], found)
    keys = sorted(set(ledger) | set(invoice))
    return Table(COLUMNS, [_row(key, ledger.get(key, LedgerLine()), invoice.get(key)) for key in keys])


def _days_by_model(export: Export) -> set[date]:
    """The days every line of which names its model."""
    days = set(export.days)
    return days - {day for day, model in export.lines if not model}


def _key(catalog: PriceCatalog, model: str) -> str:
    found = catalog.resolve(model)
    return found.model if found else model


def _merge(into: InvoiceLine, line: InvoiceLine) -> None:
    into.input_tokens += line.input_tokens
    into.cached_input_tokens += line.cached_input_tokens
    into.cache_write_tokens += line.cache_write_tokens
    into.output_tokens += line.output_tokens
    into.requests += line.requests
    into.usd += line.usd
    into.has_usage |= line.has_usage
    into.has_cost |= line.has_cost


def _row(key: tuple[date, str], ledger: LedgerLine, invoice: InvoiceLine | None) -> tuple[object, ...]:
    usage = invoice if invoice is not None and invoice.has_usage else None
    cost = invoice.usd if invoice is not None and invoice.has_cost else None
    tokens_diff = (
        ledger.input_tokens + ledger.output_tokens - usage.all_input_tokens - usage.output_tokens
        if usage
        else None
    )
    return (
        *key,
        ledger.attempts,
        usage.requests if usage else None,
        ledger.input_tokens,
        usage.all_input_tokens if usage else None,
        ledger.output_tokens,
        usage.output_tokens if usage else None,
        tokens_diff,
        ledger.usd,
        cost,
        ledger.usd - cost if cost is not None else None,
        ledger.unpriced,
    )
