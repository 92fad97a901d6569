"""The one small interface every model backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from schemas import TaskType, Usage, WorkItem


@dataclass(frozen=True)
class Completion:
    output: str
    usage: Usage
    model: str
    confidence: float | None = None


class ModelBackend(Protocol):
    provider: str

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        """Run one item; raise ProviderError (after the SDK's own retries) when it cannot."""
        ...

    async def close(self) -> None: ...


def status_error_message(exc: Any) -> str:
    """The provider's own error message from an SDK status error (OpenAI and Anthropic share the shape)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    return str(error.get("message", exc.message) if isinstance(error, dict) else exc.message)[:300]
