"""PriceCatalog: versioned per-provider token prices and exact Decimal costs from a provider's own usage.

The price files (price_catalog.py) list each model once; a result's model id, as the provider reported it,
is matched to its entry by the rules of model_ids.py. Every cost carries the catalog version and the entry
that priced it (`<provider>@<version>`, the catalog model); a model no rule matches is unpriced: its row says
`priced = 0` (and the sink counts it), never a silent $0. Savings compare an attempt with what the reference
frontier model would have charged for the same tokens (per job: see the ledger views).

`cost` prices one result with Decimal; `price` prices a whole batch in columns of whole ledger units
(1e-12 USD), with integer arithmetic wherever it gives exactly what `cost` gives (see meters.Meter).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from itertools import chain
from pathlib import Path

from modelyard.core._exceptions import ConfigError
from schemas import AnyResult, Result
from workers.sink.meters import (
    UNITS_PER_USD,
    ZERO,
    Meter,
    Rates,
    UsageLike,
    charge_columns,
    kind_columns,
)
from workers.sink.model_ids import ModelIds, Resolution
from workers.sink.price_catalog import PriceEntry, ProviderPrices, load_price_files

__all__ = ["UNITS_PER_USD", "Cost", "Meter", "PriceCatalog", "PricedColumns", "Rates"]
UNPRICED = "unpriced"
AMOUNT_COLUMNS = (
    "input",
    "cached_input",
    "cache_write",
    "output",
    "reasoning",
    "total",
    "reference",
    "savings",
    "cache_write_1h",
)


@dataclass(frozen=True)
class Cost:
    input_usd: Decimal
    cached_input_usd: Decimal
    cache_write_usd: Decimal  # 5-minute and 1-hour writes together
    output_usd: Decimal
    reasoning_usd: Decimal
    catalog_version: str
    self_hosted: bool = False
    reference_model: str = ""
    reference_usd: Decimal = ZERO
    cache_write_1h_usd: Decimal = ZERO  # the part of cache_write_usd written for an hour
    catalog_model: str = ""
    long_context: bool = False

    @property
    def priced(self) -> bool:
        return self.catalog_version != UNPRICED

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
    cache_write: list[int] = field(default_factory=list)  # 5-minute and 1-hour writes together
    output: list[int] = field(default_factory=list)
    reasoning: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)
    savings: list[int] = field(default_factory=list)
    catalog_version: list[str] = field(default_factory=list)
    self_hosted: list[int] = field(default_factory=list)
    reference_model: list[str] = field(default_factory=list)
    cache_write_1h: list[int] = field(default_factory=list)  # the part of cache_write written for an hour
    catalog_model: list[str] = field(default_factory=list)
    priced: list[int] = field(default_factory=list)
    long_context: list[int] = field(default_factory=list)

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
        self.versions = sorted(p.version_tag for p in providers)
        if reference_model and self.model_ids.resolve(reference_model) is None:
            raise ConfigError(f"costs.reference_model {reference_model!r} has no price in the catalog")
        self.reference_model = reference_model

    @classmethod
    def load(cls, directory: Path | None = None, reference_model: str | None = None) -> PriceCatalog:
        return cls(load_price_files(directory), reference_model)

    @property
    def version(self) -> str:
        return ",".join(self.versions)

    def resolve(self, model: str) -> Resolution | None:
        """The catalog model that prices `model` as a provider reported it (rules in model_ids.py)."""
        return self.model_ids.resolve(model)

    def rates(self, model: str, at: datetime) -> Rates | None:
        return self._rates_on(model, at.date())

    @lru_cache(maxsize=4096)  # noqa: B019 - the catalog is immutable and lives as long as the process
    def _rates_on(self, model: str, day: date) -> Rates | None:
        """The entry in force on `day` (before the first entry: the first one); None for an unknown model."""
        found = self.model_ids.resolve(model)
        if found is None:
            return None
        prices, entries = self.by_model[found.model]
        current = [e for e in entries if e.effective_from <= day]
        return prices.rates(found.model, current[-1] if current else entries[0])

    def cost(self, result: Result) -> Cost:
        """Cost of one attempt; a model missing from the catalog costs nothing under version 'unpriced'."""
        rates = self.rates(result.model, result.completed_at)
        if rates is None:
            return Cost(ZERO, ZERO, ZERO, ZERO, ZERO, catalog_version=UNPRICED)
        usage = result.usage
        amount = rates.charge(usage, result.batch)
        return Cost(
            input_usd=amount[0],
            cached_input_usd=amount[1],
            cache_write_usd=amount[2] + amount[3],
            output_usd=amount[4],
            reasoning_usd=amount[5],
            catalog_version=rates.catalog_version,
            self_hosted=rates.self_hosted,
            reference_model=self.reference_model or "",
            reference_usd=self._reference(result),
            cache_write_1h_usd=amount[3],
            catalog_model=rates.catalog_model,
            long_context=rates.is_long(usage),
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
        rates = self._rates_on(model, day)
        reference = self._rates_on(self.reference_model, day) if self.reference_model and rates else None
        return _Plan(rates, reference, self.reference_model or "", batch)

    def _reference(self, result: Result) -> Decimal:
        """What the reference frontier model would have charged for the same tokens (same batch mode)."""
        if not self.reference_model:
            return ZERO
        rates = self.rates(self.reference_model, result.completed_at)
        assert rates is not None
        return sum(rates.charge(result.usage, result.batch), ZERO)


class _Plan:
    """How to price the results of one model on one day in one batch mode: their ledger columns, from their usage."""

    def __init__(
        self, rates: Rates | None, reference: Rates | None, reference_model: str, batch: bool
    ) -> None:
        self.rates = rates
        self.reference = reference
        self.reference_model = reference_model if reference else ""
        self.batch = batch

    def price(self, usages: Sequence[UsageLike]) -> PricedColumns:
        rows = len(usages)
        if self.rates is None:
            zeros = [0] * rows
            return PricedColumns(
                **dict.fromkeys(AMOUNT_COLUMNS, zeros),
                catalog_version=[UNPRICED] * rows,
                self_hosted=zeros,
                reference_model=[""] * rows,
                catalog_model=[""] * rows,
                priced=zeros,
                long_context=zeros,
            )
        tokens = kind_columns(usages)
        charged = charge_columns(self.rates, self.batch, usages, tokens)
        total = charged.totals()
        if self.reference is None:
            reference = [0] * rows
        elif self.reference == self.rates:  # the reference model itself
            reference = total
        else:
            reference = charge_columns(self.reference, self.batch, usages, tokens).totals()
        savings = [r - t for r, t in zip(reference, total, strict=True)] if self.reference else [0] * rows
        amounts = charged.columns
        return PricedColumns(
            input=amounts[0],
            cached_input=amounts[1],
            cache_write=charged.sum_of(2, 3),
            output=amounts[4],
            reasoning=amounts[5],
            total=total,
            reference=reference,
            savings=savings,
            catalog_version=[self.rates.catalog_version] * rows,
            self_hosted=[int(self.rates.self_hosted)] * rows,
            reference_model=[self.reference_model] * rows,
            cache_write_1h=amounts[3],
            catalog_model=[self.rates.catalog_model] * rows,
            priced=[1] * rows,
            long_context=charged.long,
        )
