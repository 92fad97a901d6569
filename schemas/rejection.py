"""Rejection: why an input is not taken (it cannot be decoded, fails validation, names an unknown tenant, is
unsigned, repeats a job_id, is over budget, ...), as a value, never raised; it becomes a DeadLetter."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.dead_letter import MAX_MESSAGE_BYTES, MAX_ORIGINAL_BYTES, DeadLetter

_JOB_ID = re.compile(rb'"job_id"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._:/@-]{0,127})"')


@dataclass(frozen=True)
class Rejection:
    reason: str  # short and machine-friendly: invalid_json, validation, unknown_tenant, duplicate_job_id, ...
    field: str | None  # dotted path of the field to blame, when one is
    error: str

    def dead_letter(self, raw: bytes, stage: str, **source: object) -> DeadLetter:
        """The dead letter of `raw`, with its job id whenever the bytes carry a readable one."""
        return DeadLetter(
            stage=stage,
            job_id=readable_job_id(raw),
            reason=self.reason,
            field=self.field,
            error=self.error,
            original_b64=base64.b64encode(raw[:MAX_ORIGINAL_BYTES]).decode(),
            original_bytes=len(raw),
            original_truncated=len(raw) > MAX_ORIGINAL_BYTES,
            at=datetime.now(UTC),
            **source,
        )


def readable_job_id(raw: bytes) -> str | None:
    """The record's job id when one can be read without trusting the rest of it (the first `"job_id"`
    member, an identifier of at most 128 characters, possibly inside an Assignment's item); else None."""
    found = _JOB_ID.search(raw[:MAX_MESSAGE_BYTES])
    return found.group(1).decode() if found else None
