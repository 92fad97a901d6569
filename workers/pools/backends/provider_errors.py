"""The one door for model providers' errors, shared by the OpenAI and Anthropic SDK paths and the lean vLLM client.

* `provider_error` says what a failed call is to the pool: RateLimited (429, with the wait the provider asked
  for), a retryable ProviderError (timeouts, dropped connections, 408/409/5xx) or a final one (any other 4xx:
  the request's own fault, another provider would refuse it too);
* `sdk_errors` maps the openai and anthropic SDKs' exceptions (the same generated shapes in both) onto it, at
  the boundary, the way httpx maps its transport's errors in one context manager;
* the retry decisions are small pure functions, as in the SDKs' base client: `should_retry`, `backoff_s`, and
  the one Retry-After parser (`parse_retry_after`: retry-after-ms, else Retry-After in seconds or as an HTTP
  date). What a client's own retry honours is capped (`retry_after_s`: 0 < s <= 60, as the SDKs did); the
  RateLimited a pool sees carries the provider's figure as sent (its gate caps the pause).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import orjson

from modelyard.core._exceptions import ProviderError, RateLimited

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
MAX_RETRY_AFTER_S = 60.0
MESSAGE_CHARS = 300


def retryable_status(status: int) -> bool:
    """Whether another try may succeed after this HTTP status (the SDKs' rule): timeouts, conflicts, rate
    limits and server errors; any other 4xx is the request's own fault."""
    return status >= 500 or status in (408, 409, 429)


def should_retry(status: int | None) -> bool:
    """None: a timeout or a dropped connection."""
    return status is None or retryable_status(status)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, else `retry-after` in seconds or as an HTTP
    date. None when absent, unreadable or negative."""
    if not headers:
        return None
    seconds = _number(headers.get("retry-after-ms"))
    if seconds is not None:
        seconds /= 1000
    else:
        seconds = _seconds(headers.get("retry-after"), time.time() if now is None else now)
    return seconds if seconds is not None and seconds >= 0 else None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _seconds(value: str | None, now: float) -> float | None:
    seconds = _number(value)
    if seconds is not None or value is None:
        return seconds
    date = email.utils.parsedate_tz(value)
    return None if date is None else email.utils.mktime_tz(date) - now


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After value (seconds) a client's own retry honours: only 0 < s <= 60, as the SDKs."""
    seconds = parse_retry_after({"retry-after": value} if value is not None else None)
    return honoured(seconds)


def honoured(retry_after: float | None) -> float | None:
    return retry_after if retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER_S else None


def backoff_s(retry: int, retry_after: float | None, rand: random.Random = random.Random()) -> float:
    """Wait before retry number `retry` (0-based): the provider's Retry-After when sane, else 0.5 s doubling,
    capped, jittered."""
    wait = honoured(retry_after)
    if wait is not None:
        return wait
    return min(INITIAL_BACKOFF_S * 2**retry, MAX_BACKOFF_S) * (1 - 0.25 * rand.random())


def provider_error(
    provider: str, status: int | None, message: str, retry_after: float | None = None
) -> ProviderError:
    """What the pool sees once a client's retries are spent. `status` None: no HTTP answer (timeout, dropped
    connection, a client-side failure), which another try may get."""
    if status == 429:
        return RateLimited(
            f"{provider}: rate limited after retries", provider=provider, retry_after=retry_after
        )
    if status is None:
        return ProviderError(f"{provider}: {message}", provider=provider, retryable=True)
    return ProviderError(
        f"{provider}: HTTP {status}: {message}", provider=provider, retryable=retryable_status(status)
    )


def body_message(body: bytes) -> str:
    """The provider's own error message from a raw error body (JSON `{"error": {"message": ...}}` or text)."""
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:MESSAGE_CHARS].decode(errors="replace")
    error = error.get("error", error) if isinstance(error, dict) else error
    return str(error.get("message", error) if isinstance(error, dict) else error)[:MESSAGE_CHARS]


def status_error_message(exc: Any) -> str:
    """The provider's own error message from an SDK status error (OpenAI and Anthropic share the shape)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    return str(error.get("message", exc.message) if isinstance(error, dict) else exc.message)[:MESSAGE_CHARS]


def translate_sdk_error(sdk: ModuleType, exc: Exception, provider: str) -> ProviderError:
    """An openai or anthropic SDK exception (`sdk`: the module) as the pool's error."""
    if isinstance(exc, sdk.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers)
        return provider_error(provider, exc.status_code, status_error_message(exc), retry_after)
    if isinstance(exc, sdk.APITimeoutError):
        return provider_error(provider, None, "request timed out")
    return provider_error(provider, None, f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")


@contextmanager
def sdk_errors(sdk: ModuleType, provider: str) -> Iterator[None]:
    """`with sdk_errors(openai, "openai"): ...` raises the SDK's errors as ProviderError / RateLimited."""
    try:
        yield
    except sdk.APIError as exc:
        raise translate_sdk_error(sdk, exc, provider) from exc
