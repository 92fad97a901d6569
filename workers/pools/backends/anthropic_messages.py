"""Anthropic messages through the official async SDK; structured answers come back as forced tool use."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
from anthropic import AsyncAnthropic
from anthropic.types import Message

from modelyard.core.settings import PoolSettings, ProviderSettings
from schemas import TaskType, Usage, WorkItem
from workers.pools.backends.base import Completion
from workers.pools.backends.http import sdk_client
from workers.pools.backends.openai_chat import label_schema
from workers.pools.backends.provider_errors import sdk_errors
from workers.pools.prompts import conversation, system_prompt

ANSWER_TOOL = "answer"


class AnthropicBackend:
    """Claude through the SDK's own `post` (see OpenAIChatBackend for why not `messages.create`)."""

    def __init__(
        self, provider: str, settings: ProviderSettings, pool: PoolSettings, base_url: str | None = None
    ) -> None:
        self.provider = provider
        self.pool = pool
        self.client = sdk_client(AsyncAnthropic, anthropic, settings, pool, base_url)

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        with sdk_errors(anthropic, self.provider):
            response = await self.client.post(
                "/v1/messages", body=self.request(item, task_type), cast_to=Message
            )
        return completion_from_message(response)

    def request(self, item: WorkItem, task_type: TaskType) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.pool.model,
            "system": system_prompt(item, task_type),
            "messages": [{"role": m.role, "content": m.content} for m in conversation(item)],
            "max_tokens": item.params.max_output_tokens or self.pool.max_output_tokens,
        }
        schema = _answer_schema(item, task_type)
        if schema is not None:
            request["tools"] = [
                {"name": ANSWER_TOOL, "description": "Record the answer.", "input_schema": schema}
            ]
            request["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        return request

    async def close(self) -> None:
        await self.client.close()


def _answer_schema(item: WorkItem, task_type: TaskType) -> dict[str, Any] | None:
    if task_type is TaskType.CLASSIFICATION and item.params.labels:
        return label_schema(item.params.labels)
    if task_type is TaskType.EXTRACTION and item.params.json_schema:
        return item.params.json_schema
    return None


def completion_from_message(message: Message) -> Completion:
    """A Message (interactive answer or a batch's succeeded result)."""
    return Completion(
        output=_output(message.content), usage=usage_from_anthropic(message.usage), model=message.model
    )


def _output(content: list[Any]) -> str:
    for block in content:
        if block.type == "tool_use":
            data = block.input
            return str(data["label"]) if set(data) == {"label"} else orjson.dumps(data).decode()
    return "".join(block.text for block in content if block.type == "text")


def usage_from_anthropic(usage: Any) -> Usage:
    """Anthropic's input_tokens exclude cache reads and writes, which come in their own fields; the writes are
    split by TTL in `cache_creation` (1-hour writes cost more than 5-minute ones) and the thinking part of the
    output in `output_tokens_details` (SDK objects, or the same fields as plain JSON)."""
    creation = _field(usage, "cache_creation")
    one_hour = _field(creation, "ephemeral_1h_input_tokens") or 0
    five_minutes = _field(creation, "ephemeral_5m_input_tokens") or 0
    output = _field(usage, "output_tokens") or 0
    thinking = _field(_field(usage, "output_tokens_details"), "thinking_tokens") or 0
    return Usage(
        input_tokens=_field(usage, "input_tokens") or 0,
        cached_input_tokens=_field(usage, "cache_read_input_tokens") or 0,
        cache_write_tokens=max(_field(usage, "cache_creation_input_tokens") or 0, one_hour + five_minutes),
        cache_write_1h_tokens=one_hour,
        output_tokens=output,
        reasoning_tokens=min(thinking, output),
    )


def _field(value: Any, name: str) -> Any:
    if value is None:
        return None
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)
