"""Result: the outcome of one attempt at one job, with the provider's own token usage.

`Result` (pydantic) is the authority. `ResultStruct` (msgspec) is the sink's fast path for the same wire
record: it accepts a subset of what `Result` accepts, decodes to equal values, and anything it refuses goes
to `Result` for the verdict and the field-naming error (tests/unit/test_result_struct.py holds it to that).
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated, Literal

from msgspec import Meta, Struct
from msgspec.structs import force_setattr
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.decoding import plain_aware_datetime
from schemas.work_item import TaskType


class ResultStatus(StrEnum):
    """ok / error end a job (its final result); failed_over / escalated are attempts the job moved on from.

    Every job ends with exactly one final result: the one with the highest attempt number. Each attempt
    that called a provider has its own Result (and cost row), so every call is billed exactly once."""

    OK = "ok"
    ERROR = "error"
    FAILED_OVER = "failed_over"  # this provider failed; the job went on to the pool's next fallback
    ESCALATED = (
        "escalated"  # answered, but below the confidence threshold; the job went on to a stronger pool
    )
    EXPIRED = "expired"  # its deadline passed before its call: never called, never billed

    @property
    def is_final(self) -> bool:
        return self in (ResultStatus.OK, ResultStatus.ERROR, ResultStatus.EXPIRED)


MAX_TOKENS = 2**32 - 1  # UInt32 token columns
MAX_ATTEMPT = 2**16 - 1  # UInt16 attempt column
MAX_CALL_ID = 64
NO_CALL = ""  # the call id of a Result no provider call produced (every circuit open, a budget refusal)


def new_call_id() -> str:
    """A fresh id for one provider call, made when the call is sent: 128 random bits as 32 hex digits."""
    return os.urandom(16).hex()


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # bounded by the ledger's UInt32 columns, so an absurd count is a dead letter, not a failing insert
    input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS, description="Uncached input tokens.")
    cached_input_tokens: int = Field(
        default=0, ge=0, le=MAX_TOKENS, description="Input tokens read from the provider's cache."
    )
    cache_write_tokens: int = Field(
        default=0, ge=0, le=MAX_TOKENS, description="Input tokens written to the provider's cache (any TTL)."
    )
    cache_write_1h_tokens: int = Field(
        default=0,
        ge=0,
        le=MAX_TOKENS,
        description="Part of cache_write_tokens written with a 1-hour TTL (Anthropic bills them higher).",
    )
    output_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    reasoning_tokens: int = Field(
        default=0, ge=0, le=MAX_TOKENS, description="Part of output_tokens spent reasoning."
    )


class CacheOrigin(BaseModel):
    """On a cached Result: the attempt that really called the model. Its tokens are what the hit saved."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    provider: str
    model: str
    usage: Usage = Usage()
    batch: bool = False
    completed_at: AwareDatetime


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    job_id: str
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    tenant: str
    task_type: TaskType
    pool: str
    provider: str
    model: str
    status: ResultStatus
    output: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    error: str | None = Field(default=None, max_length=2000)
    usage: Usage = Usage()
    latency_ms: float = Field(ge=0.0)
    batch: bool = Field(default=False, description="Served through a provider's discounted batch API.")
    call_id: str = Field(
        default=NO_CALL,
        max_length=MAX_CALL_ID,
        description="The provider call this result reports, made when the call was sent: a replayed Result "
        "message repeats it, a second real call for the same job and attempt has its own. Empty: no call.",
    )
    completed_at: AwareDatetime
    cached: bool = Field(default=False, description="Answered from the result cache: no model call.")
    cached_from: CacheOrigin | None = Field(
        default=None, description="For a cached answer: the attempt that called the model."
    )


Tokens = Annotated[int, Meta(ge=0, le=MAX_TOKENS)]


class UsageStruct(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    input_tokens: Tokens = 0
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    cache_write_1h_tokens: Tokens = 0
    output_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0


class CacheOriginStruct(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """`CacheOrigin`, strict like ResultStruct."""

    job_id: str
    attempt: Annotated[int, Meta(ge=1, le=MAX_ATTEMPT)]
    provider: str
    model: str
    completed_at: str  # plain RFC 3339 text, an aware datetime once decoded (__post_init__)
    usage: UsageStruct = UsageStruct()
    batch: bool = False

    def __post_init__(self) -> None:
        force_setattr(
            self, "completed_at", plain_aware_datetime(self.completed_at, "cached_from.completed_at")
        )


class ResultStruct(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """`Result`'s fields and constraints, strict: no coercion (1.0 for 1, "true" for true), RFC 3339 times only."""

    job_id: str
    attempt: Annotated[int, Meta(ge=1, le=MAX_ATTEMPT)]
    tenant: str
    task_type: TaskType
    pool: str
    provider: str
    model: str
    status: ResultStatus
    latency_ms: Annotated[float, Meta(ge=0.0)]
    completed_at: str  # plain RFC 3339 text, an aware datetime once decoded (__post_init__)
    schema_version: Literal[1] = 1
    output: str | None = None
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    error: Annotated[str, Meta(max_length=2000)] | None = None
    usage: UsageStruct = UsageStruct()
    batch: bool = False
    call_id: Annotated[str, Meta(max_length=MAX_CALL_ID)] = NO_CALL
    cached: bool = False
    cached_from: CacheOriginStruct | None = None

    def __post_init__(self) -> None:
        """msgspec calls this while decoding; a ValueError here refuses the record (pydantic then decides)."""
        force_setattr(self, "completed_at", plain_aware_datetime(self.completed_at, "completed_at"))


AnyResult = (
    Result | ResultStruct
)  # what the sink holds after decoding: the fast path's struct, or pydantic's model
