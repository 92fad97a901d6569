"""ProviderGate: the per-provider rate limits every in-flight call of one pool process passes through.

* requests/min and tokens/min (aiolimiter leaky buckets). A bucket holds 10 s of budget, so a fresh
  process bursts at most a sixth of a minute's allowance instead of all of it at once;
* a shared pause: when a provider answers 429 past the SDK's own retries, every call to that provider
  waits out its Retry-After (or a growing backoff) before sending, so the whole pool slows down instead of
  each call hammering the provider on its own.

Waiting here sends nothing, so a stopping process need not wait: once `stopping` is set, a call that
would wait raises Stopping instead (the job replays after the restart; nothing is billed twice).

Tokens are counted before the call, as providers do: the input estimate plus the output budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from aiolimiter import AsyncLimiter

from modelyard.core._exceptions import Stopping
from modelyard.core.settings import ProviderSettings

BUCKET_S = 10.0
MIN_PAUSE_S = 0.05
MAX_PAUSE_S = 30.0


class ProviderGate:
    def __init__(self, name: str, settings: ProviderSettings, stopping: asyncio.Event | None = None) -> None:
        self.name = name
        self.stopping = stopping or asyncio.Event()
        self.requests = AsyncLimiter(settings.rpm * BUCKET_S / 60, BUCKET_S) if settings.rpm else None
        self.tokens = AsyncLimiter(settings.tpm * BUCKET_S / 60, BUCKET_S) if settings.tpm else None
        self._paused_until = 0.0
        self.rate_limited = 0

    async def enter(self, tokens: int) -> None:
        """Wait until this provider may take one more request of about `tokens` tokens."""
        await self._wait_out_pause()
        if self.requests is not None:
            await self._acquire(self.requests, 1)
        if self.tokens is not None:
            await self._acquire(self.tokens, min(tokens, self.tokens.max_rate))

    def pause(self, retry_after: float | None, retries_so_far: int) -> float:
        """The provider said 'slow down': hold every call to it. Returns the pause in seconds."""
        self.rate_limited += 1
        backoff = MIN_PAUSE_S * 2**retries_so_far
        seconds = min(MAX_PAUSE_S, max(retry_after or 0.0, backoff))
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        return seconds

    async def _wait_out_pause(self) -> None:
        while (wait := self._paused_until - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), wait)
            self._raise_if_stopping()

    async def _acquire(self, bucket: AsyncLimiter, amount: float) -> None:
        if bucket.has_capacity(amount):
            await bucket.acquire(amount)  # returns at once
            return
        self._raise_if_stopping()
        acquiring = asyncio.ensure_future(bucket.acquire(amount))
        stopped = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({acquiring, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquiring.done():
            acquiring.cancel()
        self._raise_if_stopping(unless_acquired=acquiring)

    def _raise_if_stopping(self, unless_acquired: asyncio.Future[None] | None = None) -> None:
        acquired = unless_acquired is not None and unless_acquired.done() and not unless_acquired.cancelled()
        if self.stopping.is_set() and not acquired:
            raise Stopping(f"{self.name}: stopping; not waiting for the rate limit")


def estimated_tokens(text_chars: int, max_output_tokens: int) -> int:
    """About four characters a token for the input, plus the whole output budget."""
    return math.ceil(text_chars / 4) + max_output_tokens
