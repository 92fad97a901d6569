"""The HTTP client the SDKs send through: aiohttp transport, one kept-alive connection per pool slot.

The SDKs' default httpx pool keeps 100 idle connections: with more calls in flight every extra one is
opened and closed per call, and httpcore's pool bookkeeping grows with the connection count. The SDKs'
own aiohttp transport (DefaultAioHttpClient) costs about half the CPU a call (see benchmarks/pools.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from modelyard.core.settings import PoolSettings, ProviderSettings


def sdk_http_client(sdk: ModuleType, connections: int) -> Any:
    """An http_client for `sdk` (the openai or anthropic module) sized to the pool's concurrency."""
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(
        max_connections=connections, max_keepalive_connections=connections
    )
    client_class = getattr(sdk, "DefaultAioHttpClient", None) or sdk.DefaultAsyncHttpxClient
    return client_class(limits=limits)


def sdk_client(
    client_class: type,
    sdk: ModuleType,
    settings: ProviderSettings,
    pool: PoolSettings,
    base_url: str | None = None,
) -> Any:
    """An official SDK's async client (AsyncOpenAI, AsyncAnthropic): key, endpoint, timeout and retries from
    the provider's settings, connections sized to the pool."""
    key = settings.api_key.get_secret_value() if settings.api_key else "unused"
    return client_class(
        api_key=key,
        base_url=base_url or settings.base_url,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
        http_client=sdk_http_client(sdk, pool.concurrency),
    )
