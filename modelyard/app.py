"""The one place that wires settings into processes: router, pools, sink, simulator."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Protocol

from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics

log = logging.getLogger("modelyard")


class Runnable(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


def configure_logging(settings: Settings, process: str) -> None:
    from modelyard.core.logs import configure_logging as configure

    configure(settings, process)


def freeze_startup_heap() -> None:
    """Garbage collections then scan only what the stream allocates, not the start-up heap (modules, settings,
    clients): at the router's rates that halves the cost of decoding an item. A larger young generation
    suits batches that allocate thousands of short-lived objects at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def provider_base_url(settings: Settings, provider: str) -> str | None:
    """Where a provider's SDK points: its configured endpoint, the real API (None), or the local simulator."""
    config = settings.providers[provider]
    if config.mode == "endpoint":
        return config.base_url
    if config.mode == "hosted":
        return None
    suffix = "" if config.api == "anthropic" else "/v1"
    return f"{settings.simulator.url}{suffix}"


def build_backend(
    settings: Settings, pool: str, provider: str | None = None, model: str | None = None
):  # -> ModelBackend
    """The SDK client for one of a pool's targets (its own provider and model unless named)."""
    from workers.pools.backends.anthropic_messages import AnthropicBackend
    from workers.pools.backends.openai_chat import OpenAIChatBackend

    pool_settings = settings.pools[pool]
    provider = provider or pool_settings.provider
    target = pool_settings.model_copy(update={"provider": provider, "model": model or pool_settings.model})
    config = settings.providers[provider]
    if config.api == "distilled":
        from workers.pools.backends.distilled import DistilledBackend
        from workers.pools.model_registry import ModelRegistry

        return DistilledBackend(
            provider,
            target,
            ModelRegistry(settings.models_dir, settings.distill.encoder_dir),
            settings.distill.reload_interval_s,
        )
    backend_class = AnthropicBackend if config.api == "anthropic" else OpenAIChatBackend
    if config.api == "vllm" and config.client == "lean":
        from workers.pools.backends.vllm_http import VllmHttpBackend

        backend_class = VllmHttpBackend
    return backend_class(provider, config, target, base_url=provider_base_url(settings, provider))


def build_dispatcher(settings: Settings, pool: str):  # -> Dispatcher
    """The pool's chain: its own provider/model, then its fallbacks; gates shared per provider."""
    from workers.pools.breaker import CircuitBreaker
    from workers.pools.dispatch import Dispatcher, Target
    from workers.pools.limits import ProviderGate
    from workers.pools.metered import MeteredBackend

    pool_settings, stopping = settings.pools[pool], asyncio.Event()
    chain = [(pool_settings.provider, pool_settings.model)] + [
        (f.provider, f.model) for f in pool_settings.fallbacks
    ]
    gates = {name: ProviderGate(name, settings.providers[name], stopping) for name, _ in chain}
    targets = []
    for provider, model in dict.fromkeys(chain):
        config = settings.providers[provider]
        targets.append(
            Target(
                provider=provider,
                model=model,
                backend=MeteredBackend(build_backend(settings, pool, provider, model), pool),
                breaker=CircuitBreaker(
                    f"{provider}/{model}", config.breaker_failures, config.breaker_cooldown_s
                ),
                gate=gates[provider],
                max_output_tokens=pool_settings.max_output_tokens,
                rate_limit_retries=config.rate_limit_retries,
            )
        )
    return Dispatcher(pool, targets, stopping, pool_settings.wait_for_circuit_s)


def build_batcher(settings: Settings, pool: str):  # -> Batcher | None
    """The pool's batch path (its own provider and model) when `pools.<name>.batch.enabled`."""
    from workers.pools.backends.anthropic_batch import AnthropicBatchBackend
    from workers.pools.backends.openai_batch import OpenAIBatchBackend
    from workers.pools.batching import Batcher

    pool_settings = settings.pools[pool]
    if not pool_settings.batch.enabled:
        return None
    backend = build_backend(settings, pool)
    is_anthropic = settings.providers[pool_settings.provider].api == "anthropic"
    batch_backend = AnthropicBatchBackend(backend) if is_anthropic else OpenAIBatchBackend(backend, pool)
    return Batcher(pool, pool_settings.batch, batch_backend, pool_settings.model)


async def serve(settings: Settings, component: Runnable, group: str) -> None:
    """Run a component until SIGTERM/SIGINT, then let it drain and commit. With `metrics.port` set, serve
    /metrics, /healthz and /readyz meanwhile, and measure the consumer group's lag periodically."""
    from modelyard.core.observability import Health, start_health_server

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


async def _watch_lag(
    settings: Settings, component: Runnable, group: str, topics_ready: asyncio.Event
) -> None:
    from modelyard.core.observability import watch_lag

    await topics_ready.wait()
    while not _consuming(component):
        await asyncio.sleep(0.1)
    await watch_lag(component.consumer, f"{settings.app_id}.{group}", settings.metrics.lag_interval_s)  # type: ignore[attr-defined]


def run_pool(settings: Settings, pool: str) -> None:
    configure_logging(settings, f"pool-{pool}")
    config = settings.pools[pool]
    log.info(
        "pool %s: provider %s (%s) model %s",
        pool,
        config.provider,
        settings.providers[config.provider].mode,
        config.model,
    )
    for fallback in config.fallbacks:
        log.info(
            "pool %s: fallback %s (%s) model %s",
            pool,
            fallback.provider,
            settings.providers[fallback.provider].mode,
            fallback.model,
        )
    if config.batch.enabled:
        log.info(
            "pool %s: deferrable items (deadline none or > %.0fs away) go through the %s batch API",
            pool,
            config.batch.horizon_s,
            config.provider,
        )
    if config.cascade:
        log.info(
            "pool %s: escalates to %s below %s",
            pool,
            config.cascade.to_pool,
            dict(config.cascade.min_confidence),
        )
    freeze_startup_heap()
    asyncio.run(_run_pool(settings, pool))


async def _run_pool(settings: Settings, pool: str) -> None:
    from workers.pools.pool import PoolWorker

    worker = PoolWorker(settings, pool, build_dispatcher(settings, pool), build_batcher(settings, pool))
    await serve(settings, worker, f"pool.{pool}")


def run_sink(settings: Settings) -> None:
    from workers.sink.clickhouse import ClickHouseStore
    from workers.sink.pricing import PriceCatalog
    from workers.sink.sink import ClickHouseSink

    configure_logging(settings, "sink")
    store = ClickHouseStore(settings.clickhouse)
    applied = store.migrate()
    log.info("ClickHouse ready; migrations applied now: %s", applied or "none")
    sink = ClickHouseSink(
        settings, store, PriceCatalog.load(settings.costs.prices_dir, settings.costs.reference_model)
    )
    freeze_startup_heap()
    try:
        asyncio.run(_serve_sink(settings, sink))
    finally:
        store.close()


async def _serve_sink(settings: Settings, sink: Runnable) -> None:
    """The sink, and (chdb:// only) its read-only query server on the same engine, for analysts meanwhile."""
    from workers.sink.query_server import start_query_server

    queries = await start_query_server(settings.clickhouse)
    try:
        await serve(settings, sink, "sink")
    finally:
        if queries is not None:
            await queries.stop()


def run_router(settings: Settings) -> None:
    import faust

    from streams.router import build_router

    configure_logging(settings, "router")
    asyncio.run(ensure_topics(settings))
    app = build_router(settings)
    freeze_startup_heap()
    worker = faust.Worker(
        app, loglevel=settings.log_level.lower(), redirect_stdouts=False, quiet=True, override_logging=False
    )
    if settings.log_format == "json":
        worker.spinner = None  # its terminal escapes would break one JSON object per line
    worker.execute_from_commandline()


def run_simulator(settings: Settings) -> None:
    from modelyard.local.simulator import serve as serve_simulator

    configure_logging(settings, "simulator")
    serve_simulator(settings.simulator)
