"""DeadLetter: an input that could not be processed, kept whole with the reason."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MAX_MESSAGE_BYTES = 1_000_000  # larger messages are refused unread (reason oversized)
MAX_ORIGINAL_BYTES = 512 * 1024  # keeps a dead letter under Kafka's default 1 MiB message size


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    stage: Literal["submit", "router", "pool", "sink"]
    reason: str = Field(description="Short machine-friendly reason, e.g. 'invalid_json', 'validation'.")
    field: str | None = Field(
        default=None, description="Dotted path of the offending field, when one is to blame."
    )
    error: str = Field(max_length=4000)
    job_id: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_line: int | None = None
    original_b64: str = Field(
        description="The original bytes, base64-encoded (the first MAX_ORIGINAL_BYTES)."
    )
    original_bytes: int = Field(default=0, ge=0, description="Size of the original message.")
    original_truncated: bool = False
    signature: str | None = Field(
        default=None,
        max_length=200,
        description="The original's modelyard-signature header (an HMAC of the bytes, no secret), resent on replay.",
    )
    at: AwareDatetime
