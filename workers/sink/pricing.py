"""PriceCatalog: versioned per-provider token prices and exact Decimal costs from a provider's own usage.

One YAML file per provider (`modelyard/data/prices/*.yaml`, or a directory named by `costs.prices_dir`).
Every cost carries the catalog version that priced it (`<provider>@<version>`). Self-hosted models are
priced from a GPU's hourly price and the throughput it sustains. Savings compare each attempt with what the
reference frontier model would have charged for the same tokens.

`cost` prices one result with Decimal; `price` prices a whole batch in columns of whole ledger units
(1e-12 USD), with integer arithmetic wherever it gives exactly what `cost` gives (see `Meter`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property, lru_cache
from importlib import resources
from itertools import chain
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.core._exceptions import ConfigError
from schemas import AnyResult, Result, Usage
from schemas.result import UsageStruct
from workers.sink.model_ids import ModelIds, Resolution

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)
SECONDS_PER_HOUR = Decimal(3600)
PRECISION = Decimal(
    "1e-12"
)  # the ledger's Decimal(24, 12): amounts are rounded once, here, so sums stay exact
UNITS_PER_USD = 10**12  # whole ledger units (PRECISION) in one USD
AnyUsage = Usage | UsageStruct
EXACT_LIMIT = 10**28  # Decimal's default 28 digits: coefficients below this multiply without rounding


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PriceEntry(Strict):
    """USD per million tokens from `effective_from` on; None = derived (self-hosted) or same as output."""

    effective_from: date
    input: Decimal | None = Field(default=None, ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal = Field(default=ZERO, ge=0)
    output: Decimal | None = Field(default=None, ge=0)
    reasoning: Decimal | None = Field(default=None, ge=0)


class SelfHosted(Strict):
    gpu_hour_usd: Decimal = Field(gt=0)
    tokens_per_second: Decimal = Field(gt=0)

    @property
    def per_million(self) -> Decimal:
        return self.gpu_hour_usd / (self.tokens_per_second * SECONDS_PER_HOUR) * MILLION


class ProviderPrices(Strict):
    provider: str
    version: str
    batch_discount: Decimal = Field(default=ZERO, ge=0, lt=1)
    self_hosted: SelfHosted | None = None
    models: dict[str, list[PriceEntry]] = Field(min_length=1)
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Other ids of this file's models: alias -> model (see model_ids.py).",
    )

    @model_validator(mode="after")
    def _prices_present(self) -> ProviderPrices:
        for alias, model in self.aliases.items():
            if model not in self.models:
                raise ValueError(f"aliases.{alias}: {model!r} is not a model of this file")
            if alias in self.models:
                raise ValueError(f"aliases.{alias}: already a model of this file")
        if self.self_hosted:
            return self
        for model, entries in self.models.items():
            for i, entry in enumerate(entries):
                if entry.input is None or entry.output is None or entry.cached_input is None:
                    raise ValueError(f"models.{model}.{i}: input, cached_input and output are required")
        return self


@dataclass(frozen=True)
class Rates:
    """Resolved USD-per-million rates for one model at one moment."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    batch_discount: Decimal
    self_hosted: bool
    catalog_version: str

    def charge(self, usage: Usage, batch: bool = False) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """(input, cached input, cache write, output, reasoning) in USD; reasoning is part of output_tokens."""
        scale = (1 - self.batch_discount) if batch else Decimal(1)
        visible_output = max(usage.output_tokens - usage.reasoning_tokens, 0)
        tokens = (
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            visible_output,
            usage.reasoning_tokens,
        )
        return tuple(_charge_one(rate, n, scale) for rate, n in zip(self._per_kind, tokens, strict=False))  # type: ignore[return-value]

    def meters(self, batch: bool) -> tuple[Meter, Meter, Meter, Meter, Meter]:
        """`charge` one token kind at a time: (input, cached input, cache write, visible output, reasoning)."""
        return self.batch_meters if batch else self.plain_meters

    @cached_property
    def plain_meters(self) -> tuple[Meter, Meter, Meter, Meter, Meter]:
        return tuple(Meter.of(rate, Decimal(1)) for rate in self._per_kind)  # type: ignore[return-value]

    @cached_property
    def batch_meters(self) -> tuple[Meter, Meter, Meter, Meter, Meter]:
        return tuple(Meter.of(rate, 1 - self.batch_discount) for rate in self._per_kind)  # type: ignore[return-value]

    @property
    def _per_kind(self) -> tuple[Decimal, ...]:
        return (self.input, self.cached_input, self.cache_write, self.output, self.reasoning)


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
class Cost:
    input_usd: Decimal
    cached_input_usd: Decimal
    cache_write_usd: Decimal
    output_usd: Decimal
    reasoning_usd: Decimal
    catalog_version: str
    self_hosted: bool = False
    reference_model: str = ""
    reference_usd: Decimal = ZERO

    @property
    def total_usd(self) -> Decimal:
        return (
            self.input_usd
            + self.cached_input_usd
            + self.cache_write_usd
            + self.output_usd
            + self.reasoning_usd
        )

    @property
    def savings_usd(self) -> Decimal:
        return self.reference_usd - self.total_usd if self.reference_model else ZERO


@dataclass
class PricedColumns:
    """Costs of a batch of results, one list per ledger column, amounts in whole ledger units (1e-12 USD)."""

    input: list[int] = field(default_factory=list)
    cached_input: list[int] = field(default_factory=list)
    cache_write: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    reasoning: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)
    savings: list[int] = field(default_factory=list)
    catalog_version: list[str] = field(default_factory=list)
    self_hosted: list[int] = field(default_factory=list)
    reference_model: list[str] = field(default_factory=list)

    @classmethod
    def in_row_order(cls, groups: list[tuple[list[int], PricedColumns]], rows: int) -> PricedColumns:
        """Columns priced group by group (each with its rows' positions in the batch), back in the batch's order."""
        if len(groups) <= 1:
            return groups[0][1] if groups else cls()
        place = [0] * rows  # each row's place in the groups' concatenated columns
        for at, row in enumerate(chain.from_iterable(positions for positions, _ in groups)):
            place[row] = at

        def column(name: str) -> list:
            concatenated = list(chain.from_iterable(getattr(columns, name) for _, columns in groups))
            return list(map(concatenated.__getitem__, place))

        return cls(**{name: column(name) for name in vars(groups[0][1])})

    def take(self, rows: Sequence[int]) -> PricedColumns:
        """The columns for the given row positions only."""
        return PricedColumns(**{name: [column[i] for i in rows] for name, column in vars(self).items()})

    def __len__(self) -> int:
        return len(self.total)


class PriceCatalog:
    def __init__(self, providers: list[ProviderPrices], reference_model: str | None = None) -> None:
        self.by_model: dict[str, tuple[ProviderPrices, list[PriceEntry]]] = {}
        aliases: dict[str, str] = {}
        for prices in providers:
            for model, entries in prices.models.items():
                if model in self.by_model or model in aliases:
                    raise ConfigError(f"price files: model {model!r} is listed twice")
                self.by_model[model] = (prices, sorted(entries, key=lambda e: e.effective_from))
            for alias, model in prices.aliases.items():
                if alias in aliases or alias in self.by_model:
                    raise ConfigError(f"price files: alias {alias!r} is listed twice")
                aliases[alias] = model
        self.model_ids = ModelIds({m: p.provider for m, (p, _) in self.by_model.items()}, aliases)
        self.versions = sorted(f"{p.provider}@{p.version}" for p in providers)
        if reference_model and self.model_ids.resolve(reference_model) is None:
            raise ConfigError(f"costs.reference_model {reference_model!r} has no price in the catalog")
        self.reference_model = reference_model

    @classmethod
    def load(cls, directory: Path | None = None, reference_model: str | None = None) -> PriceCatalog:
        sources = (
            [(str(p), p.read_text()) for p in sorted(directory.glob("*.yaml"))]
            if directory
            else _bundled_files()
        )
        if not sources:
            raise ConfigError(f"no price files (*.yaml) in {directory}")
        return cls([_parse(name, text) for name, text in sources], reference_model)

    @property
    def version(self) -> str:
        return ",".join(self.versions)

    def rates(self, model: str, at: datetime) -> Rates | None:
        return self._rates_on(model, at.date())

    def resolve(self, model: str) -> Resolution | None:
        """The catalog model that prices `model` as a provider reported it (rules in model_ids.py)."""
        return self.model_ids.resolve(model)

    @lru_cache(maxsize=4096)  # noqa: B019 - the catalog is immutable and lives as long as the process
    def _rates_on(self, model: str, day: date) -> Rates | None:
        found = self.model_ids.resolve(model)
        if found is None:
            return None
        prices, entries = self.by_model[found.model]
        current = [e for e in entries if e.effective_from <= day]
        entry = current[-1] if current else entries[0]
        return _resolve(prices, entry)

    def cost(self, result: Result) -> Cost:
        """Cost of one attempt; a model missing from the catalog costs zero under version 'unpriced'."""
        rates = self.rates(result.model, result.completed_at)
        if rates is None:
            return Cost(ZERO, ZERO, ZERO, ZERO, ZERO, catalog_version="unpriced")
        amounts = rates.charge(result.usage, result.batch)
        reference_usd = self._reference(result)
        return Cost(
            *amounts,
            catalog_version=rates.catalog_version,
            self_hosted=rates.self_hosted,
            reference_model=self.reference_model or "",
            reference_usd=reference_usd,
        )

    def price(self, results: Sequence[AnyResult]) -> PricedColumns:
        """The same figures as `cost` for every result, as ledger columns: the rows of each (model, day, batch
        mode) priced together from their token columns, in whole ledger units."""
        groups: defaultdict[tuple[str, date, bool], list[int]] = defaultdict(list)
        for row, key in enumerate([(r.model, r.completed_at.date(), r.batch) for r in results]):
            groups[key].append(row)
        usages = [r.usage for r in results]
        if len(groups) == 1:
            return self._plan(*next(iter(groups))).price(usages)
        priced = [
            (rows, self._plan(*key).price([usages[row] for row in rows])) for key, rows in groups.items()
        ]
        return PricedColumns.in_row_order(priced, len(results))

    @lru_cache(maxsize=4096)  # noqa: B019 - the catalog is immutable and lives as long as the process
    def _plan(self, model: str, day: date, batch: bool) -> _Plan:
        return _Plan(self, model, day, batch)

    def _reference(self, result: Result) -> Decimal:
        """What the reference frontier model would have charged for the same tokens (same batch mode)."""
        if not self.reference_model:
            return ZERO
        rates = self.rates(self.reference_model, result.completed_at)
        assert rates is not None
        return sum(rates.charge(result.usage, result.batch), ZERO)


class _Plan:
    """How to price the results of one model on one day in one batch mode: their ledger columns, from their usage."""

    def __init__(self, catalog: PriceCatalog, model: str, day: date, batch: bool) -> None:
        rates = catalog._rates_on(model, day)
        reference = catalog._rates_on(catalog.reference_model, day) if catalog.reference_model else None
        self.meters = rates.meters(batch) if rates else None
        self.reference_meters = reference.meters(batch) if rates and reference else None
        self.tag = (
            ("unpriced", 0, "")
            if rates is None
            else (rates.catalog_version, int(rates.self_hosted), catalog.reference_model or "")
        )

    def price(self, usages: Sequence[AnyUsage]) -> PricedColumns:
        rows = len(usages)
        tokens = token_columns(usages)
        amounts = (
            [meter.column(n) for meter, n in zip(self.meters, tokens, strict=False)]
            if self.meters
            else [[0] * rows for _ in tokens]
        )
        total = [a + b + c + d + e for a, b, c, d, e in zip(*amounts, strict=False)]
        if self.reference_meters is None:
            reference = [0] * rows
        elif self.reference_meters is self.meters:  # the reference model itself
            reference = total
        else:
            reference = [
                a + b + c + d + e
                for a, b, c, d, e in zip(
                    *(m.column(n) for m, n in zip(self.reference_meters, tokens, strict=False)), strict=False
                )
            ]
        savings = [r - t for r, t in zip(reference, total, strict=False)] if self.tag[2] else [0] * rows
        version, self_hosted, reference_model = self.tag
        return PricedColumns(
            *amounts,
            total,
            reference,
            savings,
            [version] * rows,
            [self_hosted] * rows,
            [reference_model] * rows,
        )


def token_columns(usages: Sequence[AnyUsage]) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(input, cached input, cache write, visible output, reasoning) token counts; reasoning is part of output."""
    output = [u.output_tokens for u in usages]
    reasoning = [u.reasoning_tokens for u in usages]
    visible = (
        [o - r if o > r else 0 for o, r in zip(output, reasoning, strict=False)] if any(reasoning) else output
    )
    return (
        [u.input_tokens for u in usages],
        [u.cached_input_tokens for u in usages],
        [u.cache_write_tokens for u in usages],
        visible,
        reasoning,
    )


def _resolve(prices: ProviderPrices, entry: PriceEntry) -> Rates:
    version = f"{prices.provider}@{prices.version}"
    if prices.self_hosted:
        rate = prices.self_hosted.per_million
        return Rates(rate, rate, ZERO, rate, rate, ZERO, True, version)
    assert entry.input is not None and entry.cached_input is not None and entry.output is not None
    reasoning = entry.reasoning if entry.reasoning is not None else entry.output
    return Rates(
        entry.input,
        entry.cached_input,
        entry.cache_write,
        entry.output,
        reasoning,
        prices.batch_discount,
        False,
        version,
    )


def _bundled_files() -> list[tuple[str, str]]:
    folder = resources.files("modelyard").joinpath("data/prices")
    return sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".yaml"))


def _parse(name: str, text: str) -> ProviderPrices:
    try:
        return ProviderPrices.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(f"price file {name}: {where}: {first['msg']}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"price file {name} is not valid YAML: {exc}") from exc
