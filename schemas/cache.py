"""The exact-result cache on the wire: what the router asks of a pool, and the entry pools share.

* `CacheDirective` rides on an Assignment when the routing policy opts the item's tenant and task in: how old
  an answer may be (`ttl_s`) and whose answers it may receive (`scope`: its own tenant's only, or those of
  every tenant whose policy also makes the task shareable).
* `CacheEntry` is the value on the compacted cache topic, keyed by the request's digest: the answer and the
  attempt that really called the model for it.
* `CacheOrigin` (in schemas.result) rides on a cached Result: that attempt, whose tokens the sink prices as
  the saving; the cached Result itself used none.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct
from pydantic import BaseModel, ConfigDict, Field

from schemas.result import CacheOrigin, CacheOriginStruct, UsageStruct

CacheScope = Literal["tenant", "shared"]


class CacheDirective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_s: float = Field(gt=0, description="Cached answers older than this are not used.")
    scope: CacheScope = Field(
        default="tenant", description="tenant: only this tenant's answers; shared: any sharing tenant's."
    )


class CacheEntry(Struct, frozen=True):
    """One cached answer on the cache topic. Unknown fields are ignored, so an older pool reads what a newer
    one wrote."""

    output: str
    confidence: float | None
    origin_job_id: str
    origin_attempt: int
    provider: str
    model: str
    usage: UsageStruct
    batch: bool
    answered_at: str  # RFC 3339: the origin's completed_at
    stored_at: float  # epoch seconds: the TTL counts from here


ENTRY_ENCODER = msgspec.json.Encoder()
ENTRY_DECODER = msgspec.json.Decoder(CacheEntry)

__all__ = [
    "ENTRY_DECODER",
    "ENTRY_ENCODER",
    "CacheDirective",
    "CacheEntry",
    "CacheOrigin",
    "CacheOriginStruct",
]
