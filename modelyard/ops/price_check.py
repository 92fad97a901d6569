"""`modelyard costs price RESULT.json`: the priced breakdown of one Result, so any ledger row can be checked by
hand: each token kind with its count, rate and amount, the catalog entry that priced it (which rule matched
the model id, from which day, which version, which tier) and what the reference model would have charged."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from schemas import Result
from workers.sink.meters import KINDS, kind_tokens, prompt_tokens
from workers.sink.pricing import Cost, PriceCatalog, Rates

KIND_NAMES = {
    "input": "input (uncached)",
    "cached_input": "cache reads",
    "cache_write_5m": "cache writes, 5 min",
    "cache_write_1h": "cache writes, 1 hour",
    "output": "output (visible)",
    "reasoning": "reasoning (part of output)",
}


@dataclass(frozen=True)
class KindLine:
    kind: str
    tokens: int
    usd_per_million: Decimal  # after any batch discount
    usd: Decimal


@dataclass(frozen=True)
class PriceCheck:
    result: Result
    cost: Cost
    rates: Rates | None
    rule: str
    lines: list[KindLine]

    @property
    def priced(self) -> bool:
        return self.rates is not None


def price_check(catalog: PriceCatalog, result: Result) -> PriceCheck:
    rates = catalog.rates(result.model, result.completed_at)
    cost = catalog.cost(result)
    found = catalog.resolve(result.model)
    if rates is None:
        return PriceCheck(result, cost, None, "", [])
    long = rates.is_long(result.usage)
    scale = (1 - rates.batch_discount) if result.batch else Decimal(1)
    amounts = rates.charge(result.usage, result.batch)
    lines = [
        KindLine(kind, tokens, rate * scale, usd)
        for kind, tokens, rate, usd in zip(
            KINDS, kind_tokens(result.usage), rates.tier(long).per_kind, amounts, strict=True
        )
    ]
    return PriceCheck(result, cost, rates, found.rule if found else "", lines)


def render(check: PriceCheck, console: Console) -> None:
    r = check.result
    mode = "batch" if r.batch else "interactive"
    console.print(
        f"result {r.job_id} attempt {r.attempt}: {r.provider} model {r.model!r}, "
        f"{r.completed_at:%Y-%m-%d %H:%M:%S %Z}, {mode}, status {r.status.value}",
        highlight=False,
    )
    if check.rates is None:
        console.print(
            f"[red]no catalog entry prices {r.model!r}[/red]: the sink stores it with priced = 0 (not $0). "
            "Add the model or an alias to the price files, then run `modelyard costs reprice`.",
            highlight=False,
        )
        return
    console.print(_entry_line(check), highlight=False)
    table = Table(show_footer=True)
    table.add_column("kind", footer="total")
    table.add_column("tokens", justify="right", footer=f"{sum(line.tokens for line in check.lines):,}")
    table.add_column("USD / 1M tokens", justify="right")
    table.add_column("USD", justify="right", footer=_usd(check.cost.total_usd))
    for line in check.lines:
        table.add_row(KIND_NAMES[line.kind], f"{line.tokens:,}", _usd(line.usd_per_million), _usd(line.usd))
    console.print(table)
    cost = check.cost
    if cost.reference_model:
        console.print(
            f"reference {cost.reference_model}: {_usd(cost.reference_usd)} for the same tokens; saving on this "
            f"attempt {_usd(cost.savings_usd)} (per job, every attempt counts: `modelyard costs jobs`)",
            highlight=False,
        )


def _entry_line(check: PriceCheck) -> str:
    rates, r = check.rates, check.result
    assert rates is not None
    tier = "standard tier"
    if rates.long_context is not None:
        prompt = prompt_tokens(r.usage)
        above = rates.long_context_above
        tier = (
            f"long-context tier (prompt {prompt:,} > {above:,} tokens)"
            if rates.is_long(r.usage)
            else f"standard tier (prompt {prompt:,} <= {above:,} tokens)"
        )
    discount = f", batch discount {rates.batch_discount * 100:.0f}%" if r.batch else ""
    source = f"\nsource: {rates.source}" if rates.source else ""
    return (
        f"catalog entry: {rates.catalog_model} (rule: {check.rule}), in force from {rates.effective_from}, "
        f"{rates.catalog_version}, {tier}{discount}{source}"
    )


def _usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"
