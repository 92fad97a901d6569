"""RateCard: list prices per model (USD per million input and output tokens), to estimate a call before it is made.

Budgets reserve a call's estimated cost when the call is admitted (streams' policy, the pools' cascade and
fallbacks), long before the sink prices its real usage. The estimate reads the same price files as the sink's
catalog (`modelyard/data/prices/*.yaml`, or `costs.prices_dir`) but only what it needs: each model's latest
`input` and `output` rates on a day, a self-hosted provider's per-token cost, and the files' alias table. The
sink's catalog stays the only authority on what a call cost.

A model the card does not know is estimated at the dearest rates it holds, so a budget is never under-reserved
for want of a price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from modelyard.core._exceptions import ConfigError

MILLION = Decimal(1_000_000)
PRECISION = Decimal("1e-12")  # the ledger's Decimal(24, 12)


@dataclass(frozen=True)
class ListRate:
    effective_from: date
    input: Decimal  # USD per million input tokens
    output: Decimal  # USD per million output tokens


class RateCard:
    def __init__(self, files: Iterable[tuple[str, str]]) -> None:
        self._rates: dict[str, list[ListRate]] = {}
        self._aliases: dict[str, str] = {}
        for name, text in files:
            self._read(name, text)
        known = [rate for rates in self._rates.values() for rate in rates]
        self.dearest = ListRate(
            date.min,
            max((r.input for r in known), default=Decimal(0)),
            max((r.output for r in known), default=Decimal(0)),
        )

    @classmethod
    def load(cls, directory: Path | None = None) -> RateCard:
        """The bundled price files, or every *.yaml in `directory`."""
        if directory is not None:
            return cls((str(p), p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.yaml")))
        folder = resources.files("modelyard").joinpath("data/prices")
        return cls(
            (f.name, f.read_text(encoding="utf-8")) for f in folder.iterdir() if f.name.endswith(".yaml")
        )

    def knows(self, model: str) -> bool:
        return self._entries(model) is not None

    def rate(self, model: str, day: date) -> ListRate:
        """The rates in force on `day` (the earliest entry before any is in force); the dearest if unknown."""
        entries = self._entries(model)
        if not entries:
            return self.dearest
        current = [e for e in entries if e.effective_from <= day]
        return current[-1] if current else entries[0]

    def estimate(self, model: str, input_tokens: int, output_tokens: int, day: date) -> Decimal:
        """USD for one call of `model` with that many input tokens and at most that many output tokens."""
        rate = self.rate(model, day)
        usd = (rate.input * input_tokens + rate.output * output_tokens) / MILLION
        return usd.quantize(PRECISION)

    def _entries(self, model: str) -> list[ListRate] | None:
        name = model.partition("@")[
            0
        ]  # a registered student (student@classification-v3) is priced as its name
        return self._rates.get(name) or self._rates.get(self._aliases.get(name, ""))

    def _read(self, name: str, text: str) -> None:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"price file {name} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ConfigError(f"price file {name}: models: a mapping of model -> price entries is required")
        per_token = _self_hosted_rate(name, data.get("self_hosted"))
        for model, entries in data["models"].items():
            rates = [_entry(name, model, e, per_token) for e in entries or []]
            self._rates[str(model)] = sorted(rates, key=lambda r: r.effective_from)
        self._aliases.update({str(k): str(v) for k, v in (data.get("aliases") or {}).items()})


def _self_hosted_rate(name: str, block: Any) -> Decimal | None:
    """A self-hosted provider's cost per million tokens: the GPU's hourly price over the tokens it serves an hour."""
    if not block:
        return None
    try:
        hourly, per_second = Decimal(str(block["gpu_hour_usd"])), Decimal(str(block["tokens_per_second"]))
        return hourly / (per_second * 3600) * MILLION
    except (KeyError, TypeError, ArithmeticError) as exc:
        raise ConfigError(
            f"price file {name}: self_hosted needs gpu_hour_usd and tokens_per_second > 0"
        ) from exc


def _entry(name: str, model: object, entry: Any, per_token: Decimal | None) -> ListRate:
    try:
        effective = entry["effective_from"]
        effective = effective if isinstance(effective, date) else date.fromisoformat(str(effective))
        if per_token is not None:
            return ListRate(effective, per_token, per_token)
        return ListRate(effective, Decimal(str(entry["input"])), Decimal(str(entry["output"])))
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ConfigError(
            f"price file {name}: models.{model}: each entry needs effective_from, input and output"
        ) from exc
