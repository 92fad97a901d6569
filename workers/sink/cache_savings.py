"""What each cached answer saved: its origin's tokens at the origin model's price (on the origin's date, in its
batch mode), in whole ledger units (1e-12 USD). A cached Result has no tokens of its own, so its cost row is
zero; the saving is priced by the same catalog as every other row."""

from __future__ import annotations

from collections.abc import Sequence

from schemas import AnyResult
from workers.sink.pricing import PriceCatalog


def cache_savings(catalog: PriceCatalog, results: Sequence[AnyResult]) -> list[int] | None:
    """Per result, the ledger units its cache hit saved (0 for the rest); None when no result was cached."""
    cached = [(row, r.cached_from) for row, r in enumerate(results) if r.cached and r.cached_from is not None]
    if not cached:
        return None
    priced = catalog.price([origin for _, origin in cached])  # type: ignore[misc]  # model, usage, batch, date
    saved = [0] * len(results)
    for (row, _), units in zip(cached, priced.total, strict=True):
        saved[row] = units
    return saved
