"""Which catalog entry prices a model id as a provider reports it: explicit rules, never a guess.

Providers answer with dated snapshot ids (`gpt-5-mini-2025-08-07`, `claude-sonnet-4-5-20250929`), and
gateways qualify ids with the provider (`openai/gpt-4o`, `anthropic/claude-haiku-4-5`). The catalog lists
each model once under its own name. An id resolves, first rule that applies:

1. exact:      the id is a catalog model (a dated id with prices of its own, e.g. `gpt-4o-2024-05-13`, is
               listed as itself, so it wins over rule 4);
2. alias:      the id is in a price file's `aliases` table (alias -> model of the same file);
3. qualified:  `<provider>/<id>` where `<provider>` is a price file's provider: `<id>` by rules 1, 2, 4, 5,
               and the entry found must belong to that provider (`openai/claude-...` resolves to nothing);
4. dated:      `<known>-YYYY-MM-DD` or `<known>-YYYYMMDD` with a real calendar date, where `<known>` is a
               catalog model or alias: the only known prefix that can precede a date suffix, so it is the
               longest one (`gpt-5-mini-2025-08-07` -> `gpt-5-mini`, never `gpt-5`);
5. tagged:     `<known>@<tag>` (a registered student `student@classification-v3`, or a Vertex-style
               `claude-sonnet-4-5@20250929`).

Anything else, including a known prefix followed by anything but a date (`gpt-5-nano` is not `gpt-5`), has
no price: it is stored unpriced and counted, never charged as some other model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

DATED = re.compile(r"^(?P<base>.+?)-(?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})$")


@dataclass(frozen=True)
class Resolution:
    """The catalog model that prices an id, and the rule that found it (`exact`, `alias`, `dated`, ...)."""

    model: str
    rule: str


class ModelIds:
    def __init__(self, providers: dict[str, str], aliases: dict[str, str]) -> None:
        """`providers`: catalog model -> its price file's provider; `aliases`: alias -> catalog model."""
        self.providers = providers
        self.aliases = aliases
        self.provider_names = set(providers.values())

    @lru_cache(maxsize=4096)  # noqa: B019 - immutable, lives as long as its catalog
    def resolve(self, model_id: str) -> Resolution | None:
        qualifier, slash, rest = model_id.partition("/")
        if slash and qualifier in self.provider_names and model_id not in self.providers:
            found = self._unqualified(rest)
            if found is None or self.providers[found.model] != qualifier:
                return None
            return Resolution(found.model, f"qualified+{found.rule}")
        return self._unqualified(model_id)

    def _unqualified(self, model_id: str) -> Resolution | None:
        known = self._known(model_id)
        if known is not None:
            return known
        dated = DATED.match(model_id)
        if dated and _is_date(dated) and (base := self._known(dated["base"])) is not None:
            return Resolution(base.model, "dated" if base.rule == "exact" else f"dated+{base.rule}")
        name, at, tag = model_id.partition("@")
        if at and tag and (base := self._known(name)) is not None:
            return Resolution(base.model, "tagged" if base.rule == "exact" else f"tagged+{base.rule}")
        return None

    def _known(self, model_id: str) -> Resolution | None:
        if model_id in self.providers:
            return Resolution(model_id, "exact")
        if model_id in self.aliases:
            return Resolution(self.aliases[model_id], "alias")
        return None


def _is_date(found: re.Match[str]) -> bool:
    """The suffix is -YYYY-MM-DD or -YYYYMMDD (not a mix) and names a real day."""
    suffix = found.string[len(found["base"]) :]
    if len(suffix) not in (9, 11):
        return False
    try:
        date(int(found["year"]), int(found["month"]), int(found["day"]))
    except ValueError:
        return False
    return True
