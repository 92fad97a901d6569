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


BatchRequest = tuple[str, WorkItem, TaskType]  # custom_id, item, task type


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    state: str  # the provider's own word: in_progress, completed, ended, expired...
    ended: bool


class BatchBackend(Protocol):
    """A provider's batch API: submit many requests at once, poll, read one outcome per custom_id."""

    provider: str

    async def submit(self, requests: list[BatchRequest]) -> str:
        """Send the batch; its id. Raise ProviderError (after the SDK's retries) when it cannot."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def results(
        self, batch_id: str, task_types: dict[str, TaskType]
    ) -> dict[str, Completion | Exception]:
        """Per custom_id (task_types: each request's task, to read its answer), the completion or a
        ProviderError saying whether another try may succeed. A request with no outcome is absent."""
        ...

    async def cancel(self, batch_id: str) -> None: ...

    async def close(self) -> None: ...
