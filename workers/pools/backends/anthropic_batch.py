"""Anthropic's Message Batches API through the official SDK: create a batch of message requests, poll it,
stream its JSONL results. Requests and answers are built and parsed as the interactive backend does."""

from __future__ import annotations

from typing import Any

import anthropic

from modelyard.core._exceptions import ProviderError
from schemas import TaskType
from workers.pools.backends.anthropic_messages import AnthropicBackend, completion_from_message
from workers.pools.backends.base import BatchRequest, BatchStatus, Completion
from workers.pools.backends.provider_errors import sdk_errors

RETRYABLE_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


class AnthropicBatchBackend:
    def __init__(self, messages: AnthropicBackend) -> None:
        self.messages = messages
        self.provider = messages.provider
        self.batches = messages.client.messages.batches

    async def submit(self, requests: list[BatchRequest]) -> str:
        body = [
            {"custom_id": cid, "params": self.messages.request(item, task)} for cid, item, task in requests
        ]
        with sdk_errors(anthropic, self.provider):
            return (await self.batches.create(requests=body)).id  # type: ignore[arg-type]

    async def status(self, batch_id: str) -> BatchStatus:
        with sdk_errors(anthropic, self.provider):
            batch = await self.batches.retrieve(batch_id)
        return BatchStatus(batch_id, batch.processing_status, batch.processing_status == "ended")

    async def results(
        self, batch_id: str, task_types: dict[str, TaskType]
    ) -> dict[str, Completion | Exception]:
        with sdk_errors(anthropic, self.provider):
            return {
                entry.custom_id: self._outcome(entry.result)
                async for entry in await self.batches.results(batch_id)
            }

    def _outcome(self, result: Any) -> Completion | Exception:
        if result.type == "succeeded":
            return completion_from_message(result.message)
        if result.type == "errored":
            error = result.error.error
            return ProviderError(
                f"{self.provider}: batch request {error.type}: {str(error.message)[:300]}",
                provider=self.provider,
                retryable=error.type in RETRYABLE_ERRORS,
            )
        return ProviderError(
            f"{self.provider}: batch request {result.type}", provider=self.provider, retryable=True
        )

    async def cancel(self, batch_id: str) -> None:
        with sdk_errors(anthropic, self.provider):
            await self.batches.cancel(batch_id)

    async def close(self) -> None:
        await self.messages.close()
