"""The one place that wires settings into processes: router, pools, sink, simulator. Each component gets the
slice of the settings it uses (build_dispatcher, build_routing_policy, build_pool_worker, build_sink)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import TYPE_CHECKING, Protocol

from modelyard.core.settings import CascadeSettings, Settings
from modelyard.core.topics import ensure_topics

if TYPE_CHECKING:
    import faust

    from streams.admission import Admission
    from streams.decision import PoolDecider
    from streams.policy import RoutingPolicy
    from workers.pools.pool import PoolWorker
    from workers.pools.result_cache import PoolCache
    from workers.sink.clickhouse import ClickHouseStore
    from workers.sink.pricing import PriceCatalog
    from workers.sink.sink import ClickHouseSink

log = logging.getLogger("modelyard")


class Runnable(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


def configure_logging(settings: Settings, process: str) -> None:
    from modelyard.core.logs import configure_logging as configure
    from modelyard.core.logs import secret_values

    configure(process, settings.log_level, settings.log_format, secret_values(settings))


YOUNG_OBJECTS = 10_000  # the router's and the sink's young generation
POOL_YOUNG_OBJECTS = 50_000  # a pool's: see freeze_startup_heap


def freeze_startup_heap(young_objects: int = YOUNG_OBJECTS) -> None:
    """Garbage collections then scan only what the stream allocates, not the start-up heap (modules, settings,
    clients): at the router's rates that halves the cost of decoding an item. A larger young generation
    suits batches that allocate thousands of short-lived objects at once. A pool holds hundreds of calls in
    flight for a provider's latency (each a task, its coroutines, its HTTP request): a young collection
    scans them all and finds nothing to free, so the pool collects five times less often
    (benchmarks/pools.py: 10,000 spent ~60 us of CPU per request in collections at 512 in flight)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_objects, 20, 20)


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
    if config.api == "replay":
        from workers.pools.backends.replay import ReplayBackend

        return ReplayBackend(provider, config, target.model)
    backend_class = AnthropicBackend if config.api == "anthropic" else OpenAIChatBackend
    if config.api == "vllm" and config.client == "lean":
        from workers.pools.backends.vllm_http import VllmHttpBackend

        backend_class = VllmHttpBackend
    return backend_class(provider, config, target, base_url=provider_base_url(settings, provider))


def budgeted_fallbacks(settings: Settings, pool: str) -> set[tuple[str, str]]:
    """The pool's fallback targets that spend from a budgeted pool's budget (none for a budgeted pool: the
    router admitted its items already)."""
    from modelyard.core.budgets import budgeted_targets

    costs, pool_settings = settings.costs, settings.pools[pool]
    if not costs.budgets or pool in costs.budget_pools:
        return set()
    fallbacks = {(f.provider, f.model) for f in pool_settings.fallbacks}
    return fallbacks & budgeted_targets(settings.pools, frozenset(costs.budget_pools))


def build_budget_guard(settings: Settings, pool: str, cascade: CascadeSettings | None = None):
    """The pool's own budget view (BudgetGuard), when it can start calls that spend from a budgeted pool (a
    cascade to one, a fallback to one of its targets); None otherwise (no spend topic to follow). cascade: the
    one the pool applies at start (the routing-policy file's over its own; its own when not given)."""
    from modelyard.core.budgets import BudgetGuard
    from modelyard.core.rate_card import RateCard

    costs, cascade = settings.costs, cascade or settings.pools[pool].cascade
    escalates = cascade is not None and cascade.to_pool in costs.budget_pools
    if not costs.budgets or not (escalates or budgeted_fallbacks(settings, pool)):
        return None
    return BudgetGuard(costs, RateCard.load(costs.prices_dir))


def build_dispatcher(settings: Settings, pool: str, budget=None):  # -> Dispatcher
    """The pool's chain: its own provider/model, then its fallbacks; gates shared per provider. Fallbacks
    that spend from a budgeted pool are admitted by `budget` (the pool's BudgetGuard) first."""
    from workers.pools.breaker import CircuitBreaker
    from workers.pools.dispatch import Dispatcher, Target
    from workers.pools.limits import ProviderGate
    from workers.pools.metered import MeteredBackend

    pool_settings, stopping = settings.pools[pool], asyncio.Event()
    chain = [(pool_settings.provider, pool_settings.model)] + [
        (f.provider, f.model) for f in pool_settings.fallbacks
    ]
    gates = {name: ProviderGate(name, settings.providers[name], stopping) for name, _ in chain}
    budgeted = budgeted_fallbacks(settings, pool) - {chain[0]}
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
                budgeted=(provider, model) in budgeted,
            )
        )
    return Dispatcher(pool, targets, stopping, pool_settings.wait_for_circuit_s, budget)


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


def build_decider(settings: Settings) -> PoolDecider:
    """Rules (the policy file, else the routes table), novelty, and budgets / shadow sampling when set."""
    from modelyard.core.budgets import BudgetGuard
    from modelyard.core.rate_card import RateCard
    from streams.decision import BudgetRule, PolicySource, PoolDecider, ShadowRule
    from streams.novelty import NoveltyDetector

    router, costs = settings.router, settings.costs
    source = PolicySource(
        settings.pools,
        settings.routes,
        settings.default_pool,
        router.policy_file,
        router.reload_interval_s,
        router.cache,
    )
    novelty = NoveltyDetector(router.novelty_dims, source.current().novelty.min_samples)
    calls = {name: (pool.model, pool.max_output_tokens) for name, pool in settings.pools.items()}
    budgets = (
        BudgetRule(BudgetGuard(costs, RateCard.load(costs.prices_dir)), calls, costs.downgrade_pool)
        if costs.budgets
        else None
    )
    shadow = ShadowRule(router.shadow_share, router.shadow_pool) if router.shadow_share else None
    return PoolDecider(source, novelty, budgets, shadow)


def build_admission(settings: Settings, replay: bool = False) -> Admission:
    """The router's admission: known tenants, signatures, dedup over router.dedup_window_s, the job ids routed
    before (kafka.routed_jobs_retention_days). For a dead letter's replay: the same checks on the pydantic
    model (what is replayed is the original), no dedup (the router's admission has it)."""
    from modelyard.core.signatures import TenantKeys
    from schemas import WorkItem
    from schemas.decoding import decode
    from streams.admission import Admission
    from streams.dedup import RecentJobIds
    from streams.routed_jobs import RoutedJobIds

    router = settings.router
    keys = TenantKeys(router.tenant_keys) if router.tenant_keys is not None else None
    if replay:
        return Admission(router.known_tenants, keys, decoder=lambda raw: decode(WorkItem, raw))
    routed = RoutedJobIds(settings.kafka.routed_jobs_retention_days * 86_400, router.job_ids_max_entries)
    return Admission(
        router.known_tenants,
        keys,
        RecentJobIds(router.dedup_window_s, router.dedup_max_entries),
        routed=routed,
    )


def build_routing_policy(settings: Settings) -> RoutingPolicy:
    from streams.output import OutputRecords
    from streams.policy import RoutingPolicy

    return RoutingPolicy(build_admission(settings), build_decider(settings), OutputRecords(settings.kafka))


def build_router(settings: Settings) -> faust.App:
    """The router process: a Faust app running the routing engine, novelty state, budget feed, health."""
    from modelyard.core.spend_feed import SpendFeed
    from streams.app import create_app
    from streams.router import register_budget_feed, register_health, register_novelty_state, register_router
    from streams.topics import RouterTopics

    app = create_app(settings.group_id("router"), settings.kafka, settings.state_dir)
    policy = build_routing_policy(settings)
    spend = SpendFeed(settings.kafka, policy.budgets) if policy.budgets is not None else None
    topics = RouterTopics.declare(app, settings.kafka, settings.pools)
    engine = register_router(app, topics, policy, settings.router, settings.kafka, spend)
    register_novelty_state(app, policy, settings.novelty_state_file, settings.router.novelty_save_interval_s)
    register_budget_feed(app, spend)
    register_health(app, settings.metrics, engine)
    return app


def build_pool_worker(settings: Settings, pool: str) -> PoolWorker:
    from workers.pools.cascade import PolicyCascade
    from workers.pools.pool import PoolWorker

    config, router = settings.pools[pool], settings.router
    cascades = PolicyCascade(
        router.policy_file, pool, config.cascade, router.reload_interval_s, known_pools=settings.pools
    )
    budget = build_budget_guard(settings, pool, cascades.current())
    return PoolWorker(
        pool,
        config,
        settings.kafka,
        settings.group_id(f"pool.{pool}"),
        build_dispatcher(settings, pool, budget),
        build_batcher(settings, pool),
        settings.scheduling,
        build_result_cache(settings, pool),
        budget,
        cascades,
        settings.pools,
    )


def build_result_cache(settings: Settings, pool: str) -> PoolCache:
    """The pool's copy of the shared result cache, keyed for its own provider and model."""
    from workers.pools.result_cache import PoolCache

    config = settings.pools[pool]
    target = (config.provider, config.model, config.max_output_tokens)
    return PoolCache(pool, settings.kafka, settings.result_cache, target)


def build_sink(
    settings: Settings, store: ClickHouseStore, catalog: PriceCatalog | None = None
) -> ClickHouseSink:
    """catalog: the configured prices unless given."""
    from modelyard.core.topics import sink_topics
    from workers.sink.pricing import PriceCatalog
    from workers.sink.sink import ClickHouseSink

    return ClickHouseSink(
        store,
        catalog or PriceCatalog.load(settings.costs.prices_dir, settings.costs.reference_model),
        config=settings.sink,
        kafka=settings.kafka,
        group_id=settings.group_id("sink"),
        topics=sink_topics(settings.kafka, settings.pools),
        shadow_alert=settings.shadow_alert,
        budgeted_tenants=settings.costs.budgets,
        capture_tasks=settings.distill.capture_tasks,
    )


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
        await ensure_topics(settings.kafka, settings.pools)
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
    await watch_lag(component.consumer, settings.group_id(group), settings.metrics.lag_interval_s)  # type: ignore[attr-defined]


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
    freeze_startup_heap(POOL_YOUNG_OBJECTS)
    asyncio.run(_run_pool(settings, pool))


async def _run_pool(settings: Settings, pool: str) -> None:
    await serve(settings, build_pool_worker(settings, pool), f"pool.{pool}")


def run_sink(settings: Settings) -> None:
    from workers.sink.clickhouse import ClickHouseStore

    configure_logging(settings, "sink")
    store = ClickHouseStore(settings.clickhouse)
    applied = store.migrate()
    log.info("ClickHouse ready; migrations applied now: %s", applied or "none")
    sink = build_sink(settings, store)
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

    configure_logging(settings, "router")
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
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
