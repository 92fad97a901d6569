"""Rates resolved for one model on one day, and the exact arithmetic that charges tokens with them.

Six token kinds are billed apart, each from the provider's own usage fields (see schemas.result.Usage):
uncached input, cache reads, 5-minute cache writes, 1-hour cache writes, visible output and reasoning (part
of the output). A request whose prompt (input + cache reads + cache writes) exceeds a long-context tier's
threshold is charged at that tier's rates for every token of the request, as Anthropic bills Sonnet 4/4.5
past 200k tokens. Batch requests are charged `1 - batch_discount` of either tier.

Every amount is rate * tokens * scale / 1e6 rounded half-even once to 1e-12 USD (the ledger's Decimal(24,12)).
`Meter` gives exactly that figure in whole ledger units, with integer arithmetic where a rate allows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Protocol

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)
PRECISION = Decimal(
    "1e-12"
)  # the ledger's Decimal(24, 12): amounts are rounded once, here, so sums stay exact
UNITS_PER_USD = 10**12  # whole ledger units (PRECISION) in one USD
EXACT_LIMIT = 10**28  # Decimal's default 28 digits: coefficients below this multiply without rounding
KINDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")


class UsageLike(Protocol):
    """schemas.Usage (pydantic) or schemas.result.UsageStruct (msgspec): the token counts of one attempt."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def cache_write_1h_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...


@dataclass(frozen=True)
class TierRates:
    """USD per million tokens of each kind (KINDS order)."""

    input: Decimal
    cached_input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    reasoning: Decimal

    @property
    def per_kind(self) -> tuple[Decimal, ...]:
        return (
            self.input,
            self.cached_input,
            self.cache_write_5m,
            self.cache_write_1h,
            self.output,
            self.reasoning,
        )


@dataclass(frozen=True)
class Rates:
    """What one model costs on one day: its catalog entry, the standard tier and an optional long-context one."""

    standard: TierRates
    batch_discount: Decimal
    self_hosted: bool
    catalog_version: str
    catalog_model: str = ""
    effective_from: date | None = None
    long_context: TierRates | None = None
    long_context_above: int = (
        0  # prompt tokens (input + cache reads + writes) past which `long_context` applies
    )
    source: str = ""  # where the price file says the figures come from

    def is_long(self, usage: UsageLike) -> bool:
        return self.long_context is not None and prompt_tokens(usage) > self.long_context_above

    def tier(self, long: bool) -> TierRates:
        return self.long_context if long and self.long_context is not None else self.standard

    def charge(self, usage: UsageLike, batch: bool = False) -> tuple[Decimal, ...]:
        """USD per kind (KINDS order; they add up to the request's cost)."""
        scale = self._scale(batch)
        rates = self.tier(self.is_long(usage)).per_kind
        return tuple(_charge_one(rate, n, scale) for rate, n in zip(rates, kind_tokens(usage), strict=True))

    def meters(self, batch: bool, long: bool = False) -> tuple[Meter, ...]:
        """`charge` one kind at a time, in whole ledger units (KINDS order)."""
        return self._meters(batch, long)

    @lru_cache(maxsize=4)  # noqa: B019 - frozen, and few (batch, long) pairs
    def _meters(self, batch: bool, long: bool) -> tuple[Meter, ...]:
        scale = self._scale(batch)
        return tuple(Meter.of(rate, scale) for rate in self.tier(long).per_kind)

    def _scale(self, batch: bool) -> Decimal:
        return (1 - self.batch_discount) if batch else Decimal(1)


def prompt_tokens(usage: UsageLike) -> int:
    """Every input token of the request, cached or not: what long-context thresholds are measured on."""
    return usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens


def kind_tokens(usage: UsageLike) -> tuple[int, int, int, int, int, int]:
    """Token counts per kind (KINDS order). 1-hour writes are part of cache_write_tokens, reasoning of output."""
    one_hour = usage.cache_write_1h_tokens
    reasoning = usage.reasoning_tokens
    return (
        usage.input_tokens,
        usage.cached_input_tokens,
        max(usage.cache_write_tokens - one_hour, 0),
        one_hour,
        max(usage.output_tokens - reasoning, 0),
        reasoning,
    )


def kind_columns(usages: Sequence[UsageLike]) -> tuple[list[int], ...]:
    """`kind_tokens` for every usage, one list per kind (column by column: no tuple per row)."""
    writes = [u.cache_write_tokens for u in usages]
    one_hour = [u.cache_write_1h_tokens for u in usages]
    output = [u.output_tokens for u in usages]
    reasoning = [u.reasoning_tokens for u in usages]
    return (
        [u.input_tokens for u in usages],
        [u.cached_input_tokens for u in usages],
        _less(writes, one_hour),
        one_hour,
        _less(output, reasoning),
        reasoning,
    )


def _less(totals: list[int], parts: list[int]) -> list[int]:
    """totals - parts, never below zero (the same list when no part is set)."""
    if not any(parts):
        return totals
    return [t - p if t > p else 0 for t, p in zip(totals, parts, strict=True)]


@dataclass(frozen=True)
class Meter:
    """Ledger units (1e-12 USD) for n tokens of one kind: exactly the figure `Rates.charge` gives, faster.

    `charge` computes rate * n * scale / 1e6, rounded half-even to 1e-12. When rate * scale * 1e6 is a whole
    number U, the exact amount is U * n units, with nothing to round; Decimal's steps are exact too while
    every coefficient stays under 28 digits, which `max_tokens` guarantees. Otherwise (a self-hosted rate
    like 2.50 / 36,000 per token) each distinct (rate, scale, n) is charged with Decimal once and cached."""

    rate: Decimal
    scale: Decimal
    per_token: int | None
    max_tokens: int

    @classmethod
    def of(cls, rate: Decimal, scale: Decimal) -> Meter:
        coefficient = _coefficient(rate) * _coefficient(scale)
        units = rate * scale * MILLION
        if coefficient >= EXACT_LIMIT or units != units.to_integral_value():
            return cls(rate, scale, None, 0)
        return cls(rate, scale, int(units), (EXACT_LIMIT - 1) // max(coefficient, int(units), 1))

    def __call__(self, tokens: int) -> int:
        if self.per_token is not None and tokens <= self.max_tokens:
            return self.per_token * tokens
        return _charged_units(self.rate, self.scale, tokens)

    def column(self, tokens: list[int]) -> list[int]:
        """`self(n)` for every n: one multiplication each at a whole-unit rate, else Decimal once per distinct n."""
        if self.per_token is not None and max(tokens, default=0) <= self.max_tokens:
            per_token = self.per_token
            return [per_token * n for n in tokens] if per_token else [0] * len(tokens)
        charged = {n: self(n) for n in set(tokens)}
        return [charged[n] for n in tokens]


@lru_cache(maxsize=1 << 16)
def _charged_units(rate: Decimal, scale: Decimal, tokens: int) -> int:
    return int(_charge_one(rate, tokens, scale) * UNITS_PER_USD)


def _charge_one(rate: Decimal, tokens: int, scale: Decimal) -> Decimal:
    return (rate * tokens * scale / MILLION).quantize(PRECISION, ROUND_HALF_EVEN)


def _coefficient(value: Decimal) -> int:
    """The integer digits of a Decimal without its exponent (3.75 -> 375)."""
    return int("".join(map(str, value.as_tuple().digits)))


@dataclass(frozen=True)
class Charged:
    """Ledger units per kind for a column of usages (KINDS order); a kind no usage has is the shared `zeros`."""

    columns: list[list[int]]
    long: list[int]  # 1 where the row was charged at the long-context tier
    zeros: list[int]

    def totals(self) -> list[int]:
        """Row by row sums (the `zeros` columns skipped)."""
        charged = [column for column in self.columns if column is not self.zeros]
        if len(charged) <= 1:
            return list(charged[0] if charged else self.zeros)
        if len(charged) == 2:
            return [a + b for a, b in zip(*charged, strict=True)]
        if len(charged) == 3:
            return [a + b + c for a, b, c in zip(*charged, strict=True)]
        return list(map(sum, zip(*charged, strict=True)))

    def sum_of(self, first: int, second: int) -> list[int]:
        """Two kinds' columns added (one of them when the other is all zero)."""
        a, b = self.columns[first], self.columns[second]
        if b is self.zeros or a is self.zeros:
            return a if b is self.zeros else b
        return [x + y for x, y in zip(a, b, strict=True)]


def charge_columns(
    rates: Rates, batch: bool, usages: Sequence[UsageLike], tokens: tuple[list[int], ...] | None = None
) -> Charged:
    """Every usage charged at `rates`, kind by kind: the standard tier, or the long-context one for the rows
    whose prompt exceeds its threshold. `tokens`: their `kind_columns`, when already at hand."""
    tokens = tokens or kind_columns(usages)
    zeros = [0] * len(usages)
    standard = _columns(rates.meters(batch), tokens, zeros)
    long = [int(rates.is_long(u)) for u in usages] if rates.long_context is not None else zeros
    if not any(long):
        return Charged(standard, zeros, zeros)
    tiered = _columns(rates.meters(batch, long=True), tokens, zeros)
    columns = [
        plain if plain is high else [t if flag else s for s, t, flag in zip(plain, high, long, strict=True)]
        for plain, high in zip(standard, tiered, strict=True)
    ]
    return Charged(columns, long, zeros)


def _columns(meters: tuple[Meter, ...], tokens: tuple[list[int], ...], zeros: list[int]) -> list[list[int]]:
    return [meter.column(n) if any(n) else zeros for meter, n in zip(meters, tokens, strict=True)]
