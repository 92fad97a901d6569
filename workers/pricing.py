"""PriceCatalog: per-model token prices (USD per million tokens) and exact Decimal costs per result."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from modelyard._exceptions import ConfigError
from schemas import Result

PER_TOKEN = Decimal(1_000_000)
ZERO = Decimal(0)


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    input: Decimal
    cached_input: Decimal
    cache_write: Decimal = ZERO
    output: Decimal


class CatalogFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    models: dict[str, ModelPrice]


@dataclass(frozen=True)
class Cost:
    input_usd: Decimal
    cached_input_usd: Decimal
    cache_write_usd: Decimal
    output_usd: Decimal
    catalog_version: str

    @property
    def total_usd(self) -> Decimal:
        return self.input_usd + self.cached_input_usd + self.cache_write_usd + self.output_usd


class PriceCatalog:
    def __init__(self, catalog: CatalogFile) -> None:
        self.version = catalog.version
        self.models = catalog.models

    @classmethod
    def load(cls, path: Path | None = None) -> PriceCatalog:
        text = path.read_text() if path else resources.files("modelyard").joinpath("data/prices.yaml").read_text()
        try:
            return cls(CatalogFile.model_validate(yaml.safe_load(text)))
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise ConfigError(f"price catalog {path or 'bundled'}: invalid field {where}") from exc

    def cost(self, result: Result) -> Cost:
        """Cost of one attempt; a model missing from the catalog costs zero under version 'unpriced'."""
        price = self.models.get(result.model)
        if price is None:
            return Cost(ZERO, ZERO, ZERO, ZERO, catalog_version=f"unpriced@{self.version}")
        usage = result.usage
        return Cost(
            input_usd=price.input * usage.input_tokens / PER_TOKEN,
            cached_input_usd=price.cached_input * usage.cached_input_tokens / PER_TOKEN,
            cache_write_usd=price.cache_write * usage.cache_write_tokens / PER_TOKEN,
            output_usd=price.output * usage.output_tokens / PER_TOKEN,
            catalog_version=self.version,
        )
