"""Work items built and validated where they are made, with the router's own model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modelyard.core._exceptions import InvalidInput
from schemas import ChatMessage, TaskType, WorkItem
from schemas.decoding import validate
from schemas.rejection import Rejection


def work_item(
    job_id: str,
    tenant: str,
    input: str | Sequence[ChatMessage | Mapping[str, str]],
    *,
    task: TaskType | str | None = None,
    labels: Sequence[str] | None = None,
    json_schema: Mapping[str, Any] | None = None,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    priority: int = 5,
    deadline: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> WorkItem:
    """A WorkItem, validated as the router will validate it; InvalidInput names the first bad field.

    `input` is the text, or chat messages ({"role": "user", "content": ...}). `labels` makes it a
    classification (the answer is one of them), `json_schema` an extraction; `task` is a hint otherwise
    inferred by the router. `deadline` must be timezone-aware."""
    params = {
        "labels": list(labels) if labels is not None else None,
        "json_schema": dict(json_schema) if json_schema is not None else None,
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
    }
    data = {
        "job_id": job_id,
        "tenant": tenant,
        "task": task,
        "input": input if isinstance(input, str) else [_message(m) for m in input],
        "params": {k: v for k, v in params.items() if v is not None},
        "priority": priority,
        "deadline": deadline,
        "metadata": dict(metadata or {}),
    }
    return as_work_item({k: v for k, v in data.items() if v is not None})


def as_work_item(item: WorkItem | Mapping[str, Any]) -> WorkItem:
    """A WorkItem as given, or one validated from a mapping (InvalidInput names the failing field)."""
    if isinstance(item, WorkItem):
        return item
    checked = validate(WorkItem, dict(item))
    if isinstance(checked, Rejection):
        raise InvalidInput(f"invalid work item: {checked.error}", field=checked.field, reason=checked.reason)
    return checked


def encode(item: WorkItem, now: datetime | None = None) -> bytes:
    """The record value: the item's JSON with submitted_at set (when the producer had not), nulls left out.
    A signature is computed over exactly these bytes."""
    stamped = item.with_submitted_at(now or datetime.now(UTC))
    return stamped.model_dump_json(exclude_none=True).encode()


def _message(message: ChatMessage | Mapping[str, str]) -> dict[str, str]:
    return message.model_dump() if isinstance(message, ChatMessage) else dict(message)
