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
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


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


async def serve(settings: Settings, component: Runnable) -> None:
    """Run a component until SIGTERM/SIGINT, then let it drain and commit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(settings)
    await component.run(stop)


def run_pool(settings: Settings, pool: str) -> None:
    configure_logging(settings, f"pool-{pool}")
    provider = settings.pools[pool].provider
    log.info("pool %s: provider %s (%s) model %s", pool, provider, settings.providers[provider].mode, settings.pools[pool].model)
    asyncio.run(_run_pool(settings, pool))


async def _run_pool(settings: Settings, pool: str) -> None:
    from workers.pool import PoolWorker

    await serve(settings, PoolWorker(settings, pool, build_backend(settings, pool)))


def run_sink(settings: Settings) -> None:
    from workers.clickhouse import ClickHouseStore
    from workers.pricing import PriceCatalog
    from workers.sink import ClickHouseSink

    configure_logging(settings, "sink")
    store = ClickHouseStore(settings.clickhouse)
    applied = store.migrate()
    log.info("ClickHouse ready; migrations applied now: %s", applied or "none")
    sink = ClickHouseSink(settings, store, PriceCatalog.load(settings.costs.prices_dir, settings.costs.reference_model))
    try:
        asyncio.run(serve(settings, sink))
    finally:
        store.close()


def run_router(settings: Settings) -> None:
    import faust

    from streams.router import build_router

    configure_logging(settings, "router")
    asyncio.run(ensure_topics(settings))
    app = build_router(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()


def run_simulator(settings: Settings) -> None:
    from modelyard.simulator import serve as serve_simulator

    configure_logging(settings, "simulator")
    serve_simulator(settings.simulator)
