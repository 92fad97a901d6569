"""The HTTP client the SDKs send through: aiohttp transport, one kept-alive connection per pool slot.

The SDKs' default httpx pool keeps 100 idle connections: with more calls in flight every extra one is
opened and closed per call, and httpcore's pool bookkeeping grows with the connection count. The SDKs'
own aiohttp transport (DefaultAioHttpClient) costs about half the CPU a call (see benchmarks/pools.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def sdk_http_client(sdk: ModuleType, connections: int) -> Any:
    """An http_client for `sdk` (the openai or anthropic module) sized to the pool's concurrency."""
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(max_connections=connections, max_keepalive_connections=connections)
    client_class = getattr(sdk, "DefaultAioHttpClient", None) or sdk.DefaultAsyncHttpxClient
    return client_class(limits=limits)
