"""OpenAI-compatible chat completions through the official async SDK: vLLM, OpenAI, any compatible server."""

from __future__ import annotations

import math
from typing import Any

import openai
import orjson
from openai import AsyncOpenAI

from modelyard.core.settings import PoolSettings, ProviderSettings
from schemas import TaskType, Usage, WorkItem
from workers.pools.backends.base import Completion
from workers.pools.backends.http import sdk_client
from workers.pools.backends.provider_errors import sdk_errors
from workers.pools.prompts import conversation, system_prompt


class ChatCompletionsDialect:
    """What goes over the wire for one pool's model on the chat-completions API, and how the answer reads back:
    shared by the SDK client below, the lean vLLM client (vllm_http.py) and the Batch API (openai_batch.py)."""

    def __init__(self, provider: str, settings: ProviderSettings, pool: PoolSettings) -> None:
        self.provider = provider
        self.dialect = settings.api
        self.pool = pool

    def completion(self, response: dict[str, Any], task_type: TaskType) -> Completion:
        """A chat.completion object as the provider sent it (interactive answer or a batch output line's body)."""
        choice = response["choices"][0]
        return Completion(
            output=self._answer(choice["message"].get("content") or "", task_type),
            usage=usage_from_openai(response.get("usage")),
            model=response.get("model") or self.pool.model,
            confidence=confidence_from_logprobs(choice.get("logprobs")),
        )

    def request(self, item: WorkItem, task_type: TaskType) -> dict[str, Any]:
        messages = [{"role": "system", "content": system_prompt(item, task_type)}]
        messages += [{"role": m.role, "content": m.content} for m in conversation(item)]
        request: dict[str, Any] = {
            "model": self.pool.model,
            "messages": messages,
            "max_tokens": item.params.max_output_tokens or self.pool.max_output_tokens,
            "temperature": 0,
        }
        return request | self._structured(item, task_type)

    def body(self, item: WorkItem, task_type: TaskType) -> dict[str, Any]:
        """The JSON body as sent: vLLM's extra_body fields at the top level."""
        request = self.request(item, task_type)
        return request | request.pop("extra_body", {})

    def _structured(self, item: WorkItem, task_type: TaskType) -> dict[str, Any]:
        labels, schema = item.params.labels, item.params.json_schema
        if task_type is TaskType.CLASSIFICATION and labels:
            if self.dialect == "vllm":
                return {"logprobs": True, "extra_body": {"structured_outputs": {"choice": labels}}}
            return {"logprobs": True, "response_format": _json_schema_format("label", label_schema(labels))}
        if task_type is TaskType.EXTRACTION and schema:
            if self.dialect == "vllm":
                return {"extra_body": {"structured_outputs": {"json": schema}}}
            return {"response_format": _json_schema_format("extraction", schema)}
        return {}

    def _answer(self, content: str, task_type: TaskType) -> str:
        """vLLM's choice constraint returns the bare label; OpenAI's JSON schema returns {"label": ...}."""
        if task_type is not TaskType.CLASSIFICATION or self.dialect == "vllm":
            return content
        try:
            return str(orjson.loads(content)["label"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return content


class OpenAIChatBackend(ChatCompletionsDialect):
    """One pool's model behind the chat-completions API. SDK retries (with Retry-After) are the only retries.

    Requests go through the SDK's own `post` (auth, retries honouring Retry-After, timeouts, typed errors)
    with a body we built as plain JSON, and the answer comes back as the JSON the provider sent. `create()`
    would walk our params to transform them and build a typed ChatCompletion from the answer: together
    about 0.7 ms of CPU a call, measured with benchmarks/pools.py (1.9 -> 0.6 ms a call with the aiohttp
    transport of workers/backends/http.py)."""

    def __init__(
        self, provider: str, settings: ProviderSettings, pool: PoolSettings, base_url: str | None = None
    ) -> None:
        super().__init__(provider, settings, pool)
        self.client = sdk_client(AsyncOpenAI, openai, settings, pool, base_url)

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        with sdk_errors(openai, self.provider):
            response = await self.client.post(
                "/chat/completions", body=self.body(item, task_type), cast_to=object
            )
        return self.completion(response, task_type)

    async def close(self) -> None:
        await self.client.close()


def label_schema(labels: list[str]) -> dict[str, Any]:
    """Structured-output schemas must have an object at the root: the label goes in one enum field."""
    label = {"type": "string", "enum": labels}
    return {
        "type": "object",
        "properties": {"label": label},
        "required": ["label"],
        "additionalProperties": False,
    }


def _json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def usage_from_openai(usage: dict[str, Any] | None) -> Usage:
    """OpenAI counts cache reads and writes inside prompt_tokens, and reasoning inside completion_tokens: each is
    stored apart (usage.prompt_tokens_details.cached_tokens / cache_write_tokens,
    completion_tokens_details.reasoning_tokens) so each is priced once, at its own rate."""
    if not usage:
        return Usage()
    prompt = usage.get("prompt_tokens_details") or {}
    cached = prompt.get("cached_tokens") or 0
    writes = prompt.get("cache_write_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return Usage(
        input_tokens=max(usage["prompt_tokens"] - cached - writes, 0),
        cached_input_tokens=cached,
        cache_write_tokens=writes,
        output_tokens=usage["completion_tokens"],
        reasoning_tokens=reasoning,
    )


def confidence_from_logprobs(logprobs: dict[str, Any] | None) -> float | None:
    """Probability of the first generated token: for a constrained label it decides the answer."""
    content = (logprobs or {}).get("content")
    if not content:
        return None
    return min(1.0, math.exp(content[0]["logprob"]))
