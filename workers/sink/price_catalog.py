"""The price files: one YAML file per provider (`modelyard/data/prices/*.yaml`, or `costs.prices_dir`).

A file names its provider and version, a batch discount, an alias table (other ids of its models, see
model_ids.py) and per model a list of entries, each in force from its `effective_from` date. An entry gives USD
per million tokens for `input`, `cached_input` (cache reads), `cache_write` (5-minute cache writes; default:
the input rate, as OpenAI bills cache writes), `cache_write_1h` (1-hour writes; default: `cache_write`),
`output` and `reasoning` (default: the output rate), an optional `long_context` tier (`above_input_tokens`
and its own rates, for the whole request past that prompt size) and a free-text `source`. Self-hosted models
have no list price: `self_hosted.gpu_hour_usd / tokens_per_second` prices every token alike.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.core._exceptions import ConfigError
from workers.sink.meters import MILLION, ZERO, Rates, TierRates

SECONDS_PER_HOUR = Decimal(3600)
Price = Decimal | None


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierPrices(Strict):
    """USD per million tokens; None where the file leaves a kind to its default."""

    input: Price = Field(default=None, ge=0)
    cached_input: Price = Field(default=None, ge=0)
    cache_write: Price = Field(default=None, ge=0)
    cache_write_1h: Price = Field(default=None, ge=0)
    output: Price = Field(default=None, ge=0)
    reasoning: Price = Field(default=None, ge=0)

    def rates(self) -> TierRates:
        assert self.input is not None and self.cached_input is not None and self.output is not None
        cache_write = self.cache_write if self.cache_write is not None else self.input
        return TierRates(
            input=self.input,
            cached_input=self.cached_input,
            cache_write_5m=cache_write,
            cache_write_1h=self.cache_write_1h if self.cache_write_1h is not None else cache_write,
            output=self.output,
            reasoning=self.reasoning if self.reasoning is not None else self.output,
        )

    def missing(self) -> list[str]:
        return [name for name in ("input", "cached_input", "output") if getattr(self, name) is None]


class LongContext(TierPrices):
    above_input_tokens: int = Field(gt=0, description="Prompt tokens (input + cache reads + writes).")


class PriceEntry(TierPrices):
    effective_from: date
    long_context: LongContext | None = None
    source: str = ""


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
                for where, prices in (
                    (f"models.{model}.{i}", entry),
                    (f"models.{model}.{i}.long_context", entry.long_context),
                ):
                    if prices is not None and prices.missing():
                        raise ValueError(f"{where}: input, cached_input and output are required")
        return self

    @property
    def version_tag(self) -> str:
        return f"{self.provider}@{self.version}"

    def rates(self, model: str, entry: PriceEntry) -> Rates:
        """The entry's rates as the meters use them."""
        if self.self_hosted:
            rate = self.self_hosted.per_million
            flat = TierRates(rate, rate, rate, rate, rate, rate)
            return Rates(flat, ZERO, True, self.version_tag, model, entry.effective_from)
        tier = entry.long_context
        return Rates(
            entry.rates(),
            self.batch_discount,
            False,
            self.version_tag,
            model,
            entry.effective_from,
            long_context=tier.rates() if tier else None,
            long_context_above=tier.above_input_tokens if tier else 0,
            source=entry.source,
        )


def load_price_files(directory: Path | None = None) -> list[ProviderPrices]:
    """Every price file of `directory`, or the bundled ones."""
    sources = (
        [(str(p), p.read_text()) for p in sorted(directory.glob("*.yaml"))] if directory else bundled_files()
    )
    if not sources:
        raise ConfigError(f"no price files (*.yaml) in {directory}")
    return [parse_price_file(name, text) for name, text in sources]


def bundled_files() -> list[tuple[str, str]]:
    folder = resources.files("modelyard").joinpath("data/prices")
    return sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".yaml"))


def parse_price_file(name: str, text: str) -> ProviderPrices:
    try:
        return ProviderPrices.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(f"price file {name}: {where}: {first['msg']}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"price file {name} is not valid YAML: {exc}") from exc
