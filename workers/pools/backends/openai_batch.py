"""OpenAI's Batch API through the official SDK: upload a JSONL file of chat-completion requests, create a
batch over it, poll it, read its output and error files. Requests are built exactly as the interactive
backend builds them, and answers parsed the same way, so a batch answer equals an interactive one."""

from __future__ import annotations

from typing import Any

import openai
import orjson

from modelyard.core._exceptions import ProviderError
from schemas import TaskType
from workers.pools.backends.base import BatchRequest, BatchStatus, Completion
from workers.pools.backends.openai_chat import OpenAIChatBackend
from workers.pools.backends.provider_errors import retryable_status, sdk_errors

ENDPOINT = "/v1/chat/completions"
ENDED = {"completed", "failed", "expired", "cancelled"}


class OpenAIBatchBackend:
    def __init__(self, chat: OpenAIChatBackend, pool: str) -> None:
        self.chat = chat
        self.provider = chat.provider
        self.pool = pool

    async def submit(self, requests: list[BatchRequest]) -> str:
        lines = [
            orjson.dumps(
                {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": self.chat.body(item, task)}
            )
            for cid, item, task in requests
        ]
        with sdk_errors(openai, self.provider):
            upload = await self.chat.client.files.create(
                file=("modelyard-batch.jsonl", b"\n".join(lines) + b"\n", "application/jsonl"),
                purpose="batch",
            )
            batch = await self.chat.client.batches.create(
                input_file_id=upload.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"modelyard_pool": self.pool},
            )
        return batch.id

    async def status(self, batch_id: str) -> BatchStatus:
        batch = await self._retrieve(batch_id)
        return BatchStatus(batch_id, batch.status, batch.status in ENDED)

    async def results(
        self, batch_id: str, task_types: dict[str, TaskType]
    ) -> dict[str, Completion | Exception]:
        batch = await self._retrieve(batch_id)
        outcomes: dict[str, Completion | Exception] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in (await self._content(file_id)).splitlines():
                    if line.strip():
                        entry = orjson.loads(line)
                        outcomes[entry["custom_id"]] = self._outcome(entry, task_types)
        if batch.status == "failed" and batch.errors and batch.errors.data:
            first = batch.errors.data[0]
            failure = ProviderError(
                f"{self.provider}: batch {batch_id} failed: {first.code}: {first.message}",
                provider=self.provider,
                retryable=True,
            )  # the items themselves may be fine: they fail over to the interactive chain
            outcomes = dict.fromkeys(task_types, failure)
        return outcomes

    def _outcome(self, entry: dict[str, Any], task_types: dict[str, TaskType]) -> Completion | Exception:
        response, error = entry.get("response"), entry.get("error")
        if response and response.get("status_code") == 200:
            return self.chat.completion(response["body"], task_types.get(entry["custom_id"], TaskType.OTHER))
        if response:
            code, body = response.get("status_code", 0), response.get("body") or {}
            message = str((body.get("error") or {}).get("message", ""))[:300]
            retryable = retryable_status(code)
            return ProviderError(
                f"{self.provider}: batch request HTTP {code}: {message}",
                provider=self.provider,
                retryable=retryable,
            )
        code, message = (error or {}).get("code", "unknown"), str((error or {}).get("message", ""))[:300]
        return ProviderError(
            f"{self.provider}: batch request {code}: {message}", provider=self.provider, retryable=True
        )

    async def cancel(self, batch_id: str) -> None:
        with sdk_errors(openai, self.provider):
            await self.chat.client.batches.cancel(batch_id)

    async def _retrieve(self, batch_id: str) -> Any:
        with sdk_errors(openai, self.provider):
            return await self.chat.client.batches.retrieve(batch_id)

    async def _content(self, file_id: str) -> bytes:
        with sdk_errors(openai, self.provider):
            return (await self.chat.client.files.content(file_id)).content

    async def close(self) -> None:
        await self.chat.close()
