"""Rejection: why an input is not taken (it cannot be decoded, fails validation, names an unknown tenant, is
unsigned, repeats a job_id, is over budget, ...), as a value, never raised; it becomes a DeadLetter."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.dead_letter import MAX_ORIGINAL_BYTES, DeadLetter


@dataclass(frozen=True)
class Rejection:
    reason: str  # short and machine-friendly: invalid_json, validation, unknown_tenant, duplicate_job_id, ...
    field: str | None  # dotted path of the field to blame, when one is
    error: str

    def dead_letter(self, raw: bytes, stage: str, **source: object) -> DeadLetter:
        return DeadLetter(
            stage=stage,
            reason=self.reason,
            field=self.field,
            error=self.error,
            original_b64=base64.b64encode(raw[:MAX_ORIGINAL_BYTES]).decode(),
            original_bytes=len(raw),
            original_truncated=len(raw) > MAX_ORIGINAL_BYTES,
            at=datetime.now(UTC),
            **source,
        )
