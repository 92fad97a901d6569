"""The one place that wires settings into processes: router, pools, sink, simulator."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from modelyard.settings import Settings
from modelyard.topics import ensure_topics

log = logging.getLogger("modelyard")


class Runnable(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


def configure_logging(settings: Settings, process: str) -> None:
    from modelyard.logs import configure_logging as configure

    configure(settings, process)


def provider_base_url(settings: Settings, provider: str) -> str | None:
    """Where a provider's SDK points: its configured endpoint, the real API (None), or the local simulator."""
    config = settings.providers[provider]
    if config.mode == "endpoint":
        return config.base_url
    if config.mode == "hosted":
        return None
    suffix = "" if config.api == "anthropic" else "/v1"
    return f"{settings.simulator.url}{suffix}"


def build_backend(settings: Settings, pool: str):  # -> ModelBackend
    from workers.backends.anthropic_messages import AnthropicBackend
    from workers.backends.openai_chat import OpenAIChatBackend

    provider = settings.pools[pool].provider
    config = settings.providers[provider]
    backend_class = AnthropicBackend if config.api == "anthropic" else OpenAIChatBackend
    return backend_class(provider, config, settings.pools[pool], base_url=provider_base_url(settings, provider))


def metered_backend(settings: Settings, pool: str):  # -> ModelBackend
    from workers.metered import MeteredBackend

    return MeteredBackend(build_backend(settings, pool), pool)


async def serve(settings: Settings, component: Runnable, group: str) -> None:
    """Run a component until SIGTERM/SIGINT, then let it drain and commit. With `metrics.port` set, serve
    /metrics, /healthz and /readyz meanwhile, and measure the consumer group's lag periodically."""
    from modelyard.observability import Health, start_health_server

    stop, topics_ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = Health(ready=lambda: topics_ready.is_set() and _consuming(component) and not stop.is_set())
    server = await start_health_server(settings.metrics, health)
    lag = asyncio.create_task(_watch_lag(settings, component, group, topics_ready)) if server else None
    try:
        await ensure_topics(settings)
        topics_ready.set()
        await component.run(stop)
    finally:
        if lag:
            lag.cancel()
        if server:
            await server.stop()


def _consuming(component: Runnable) -> bool:
    return getattr(component, "consumer", None) is not None


async def _watch_lag(settings: Settings, component: Runnable, group: str, topics_ready: asyncio.Event) -> None:
    from modelyard.observability import watch_lag

    await topics_ready.wait()
    while not _consuming(component):
        await asyncio.sleep(0.1)
    await watch_lag(component.consumer, f"{settings.app_id}.{group}", settings.metrics.lag_interval_s)  # type: ignore[attr-defined]


def run_pool(settings: Settings, pool: str) -> None:
    configure_logging(settings, f"pool-{pool}")
    provider = settings.pools[pool].provider
    log.info("pool %s: provider %s (%s) model %s", pool, provider, settings.providers[provider].mode, settings.pools[pool].model)
    asyncio.run(_run_pool(settings, pool))


async def _run_pool(settings: Settings, pool: str) -> None:
    from workers.pool import PoolWorker

    await serve(settings, PoolWorker(settings, pool, metered_backend(settings, pool)), f"pool.{pool}")


def run_sink(settings: Settings) -> None:
    from workers.clickhouse import ClickHouseStore
    from workers.pricing import PriceCatalog
    from workers.sink import ClickHouseSink

    configure_logging(settings, "sink")
    store = ClickHouseStore(settings.clickhouse)
    applied = store.migrate()
    log.info("ClickHouse ready; migrations applied now: %s", applied or "none")
    sink = ClickHouseSink(settings, store, PriceCatalog.load(settings.prices_file))
    try:
        asyncio.run(serve(settings, sink, "sink"))
    finally:
        store.close()


def run_router(settings: Settings) -> None:
    import faust

    from streams.router import build_router

    configure_logging(settings, "router")
    asyncio.run(ensure_topics(settings))
    app = build_router(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False, quiet=True, override_logging=False)
    if settings.log_format == "json":
        worker.spinner = None  # its terminal escapes would break one JSON object per line
    worker.execute_from_commandline()


def run_simulator(settings: Settings) -> None:
    from modelyard.simulator import serve as serve_simulator

    configure_logging(settings, "simulator")
    serve_simulator(settings.simulator)
