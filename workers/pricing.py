"""PriceCatalog: versioned per-provider token prices and exact Decimal costs from a provider's own usage.

One YAML file per provider (`modelyard/data/prices/*.yaml`, or a directory named by `costs.prices_dir`).
Every cost carries the catalog version that priced it (`<provider>@<version>`). Self-hosted models are
priced from a GPU's hourly price and the throughput it sustains. Savings compare each attempt with what the
reference frontier model would have charged for the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard._exceptions import ConfigError
from schemas import Result, Usage

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)
SECONDS_PER_HOUR = Decimal(3600)
PRECISION = Decimal("1e-12")  # the ledger's Decimal(24, 12): amounts are rounded once, here, so sums stay exact


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

    @model_validator(mode="after")
    def _prices_present(self) -> ProviderPrices:
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
        amounts = (
            self.input * usage.input_tokens, self.cached_input * usage.cached_input_tokens,
            self.cache_write * usage.cache_write_tokens, self.output * visible_output,
            self.reasoning * usage.reasoning_tokens,
        )
        return tuple((a * scale / MILLION).quantize(PRECISION, ROUND_HALF_EVEN) for a in amounts)  # type: ignore[return-value]


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
        return self.input_usd + self.cached_input_usd + self.cache_write_usd + self.output_usd + self.reasoning_usd

    @property
    def savings_usd(self) -> Decimal:
        return self.reference_usd - self.total_usd if self.reference_model else ZERO


class PriceCatalog:
    def __init__(self, providers: list[ProviderPrices], reference_model: str | None = None) -> None:
        self.by_model: dict[str, tuple[ProviderPrices, list[PriceEntry]]] = {}
        for prices in providers:
            for model, entries in prices.models.items():
                self.by_model[model] = (prices, sorted(entries, key=lambda e: e.effective_from))
        self.versions = sorted(f"{p.provider}@{p.version}" for p in providers)
        if reference_model and reference_model not in self.by_model:
            raise ConfigError(f"costs.reference_model {reference_model!r} has no price in the catalog")
        self.reference_model = reference_model

    @classmethod
    def load(cls, directory: Path | None = None, reference_model: str | None = None) -> PriceCatalog:
        sources = [(str(p), p.read_text()) for p in sorted(directory.glob("*.yaml"))] if directory else _bundled_files()
        if not sources:
            raise ConfigError(f"no price files (*.yaml) in {directory}")
        return cls([_parse(name, text) for name, text in sources], reference_model)

    @property
    def version(self) -> str:
        return ",".join(self.versions)

    def rates(self, model: str, at: datetime) -> Rates | None:
        return self._rates_on(model, at.date())

    @lru_cache(maxsize=4096)  # noqa: B019 - the catalog is immutable and lives as long as the process
    def _rates_on(self, model: str, day: date) -> Rates | None:
        """`name@version` (a registered student, e.g. student@classification-v3) is priced as `name`."""
        found = self.by_model.get(model) or self.by_model.get(model.partition("@")[0])
        if found is None:
            return None
        prices, entries = found
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
        return Cost(*amounts, catalog_version=rates.catalog_version, self_hosted=rates.self_hosted,
                    reference_model=self.reference_model or "", reference_usd=reference_usd)

    def _reference(self, result: Result) -> Decimal:
        """What the reference frontier model would have charged for the same tokens (same batch mode)."""
        if not self.reference_model:
            return ZERO
        rates = self.rates(self.reference_model, result.completed_at)
        assert rates is not None
        return sum(rates.charge(result.usage, result.batch), ZERO)


def _resolve(prices: ProviderPrices, entry: PriceEntry) -> Rates:
    version = f"{prices.provider}@{prices.version}"
    if prices.self_hosted:
        rate = prices.self_hosted.per_million
        return Rates(rate, rate, ZERO, rate, rate, ZERO, True, version)
    assert entry.input is not None and entry.cached_input is not None and entry.output is not None
    reasoning = entry.reasoning if entry.reasoning is not None else entry.output
    return Rates(entry.input, entry.cached_input, entry.cache_write, entry.output, reasoning, prices.batch_discount, False, version)


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
