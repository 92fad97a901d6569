"""The one small interface every model backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
