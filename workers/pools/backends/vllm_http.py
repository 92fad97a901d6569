"""vLLM's OpenAI-compatible chat completions over a lean aiohttp client, for the high-volume SLM pool.

Through the openai SDK a call costs ~0.7 ms of CPU (request options, httpx-style response wrapping,
retry bookkeeping); this client sends the same JSON body and reads the same answer for ~0.16 ms
(benchmarks/pools.py), so one SLM pool process keeps about four times the calls in flight per core. OpenAI and
Anthropic stay on their official SDKs. Retries follow the SDKs' rules, as the small pure functions the SDK paths
share (provider_errors.py): 408, 409, 429 and 5xx, timeouts and dropped connections are retried up to
`max_retries` times, after the server's Retry-After when it sends one, else an exponential backoff with jitter;
what is left once they are spent becomes the same errors the SDK paths raise.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson

from modelyard.core.settings import PoolSettings, ProviderSettings
from schemas import TaskType, WorkItem
from workers.pools.backends.base import Completion
from workers.pools.backends.openai_chat import ChatCompletionsDialect
from workers.pools.backends.provider_errors import (
    backoff_s,
    body_message,
    parse_retry_after,
    provider_error,
    should_retry,
)

log = logging.getLogger("modelyard.vllm")
NO_ANSWER = "request timed out or the connection dropped"


class VllmHttpBackend(ChatCompletionsDialect):
    def __init__(
        self, provider: str, settings: ProviderSettings, pool: PoolSettings, base_url: str | None = None
    ) -> None:
        super().__init__(provider, settings, pool)
        self.url = f"{(base_url or settings.base_url or '').rstrip('/')}/chat/completions"
        key = settings.api_key.get_secret_value() if settings.api_key else "unused"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.max_retries = settings.max_retries
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self.connections = pool.concurrency
        self._session: aiohttp.ClientSession | None = None

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        body = orjson.dumps(self.body(item, task_type))
        for retry in range(self.max_retries + 1):
            status, answer, retry_after = await self._post(body)
            if log.isEnabledFor(logging.DEBUG):  # the job_id comes from the task's logging context
                log.debug("POST %s -> %s", self.url, status or "no answer")
            if status == 200:
                return self.completion(orjson.loads(answer), task_type)
            if retry == self.max_retries or not should_retry(status):
                message = body_message(answer) if status is not None else NO_ANSWER
                raise provider_error(self.provider, status, message, retry_after)
            wait = backoff_s(retry, retry_after)
            log.info(
                "%s: %s, retry %d of %d in %.2f s",
                self.provider,
                status or "no answer",
                retry + 1,
                self.max_retries,
                wait,
            )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, body: bytes) -> tuple[int | None, bytes, float | None]:
        """(status, body, Retry-After) of one attempt; status None for a timeout or a dropped connection."""
        try:
            async with self.session().post(self.url, data=body, headers=self.headers) as response:
                answer = await response.read()
                if response.status == 200:
                    return 200, answer, None
                return response.status, answer, parse_retry_after(response.headers)
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            return None, str(exc).encode(), None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it must belong to the running event loop
            connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=self.connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
