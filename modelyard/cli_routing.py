"""`modelyard routing fit`: learn the per-item router from labelled outcomes and register it as a new version.

    modelyard routing fit --recording ../shared/datasets/routellm-mmlu-recorded.jsonl \\
        --pool weak=mistralai/Mixtral-8x7B-Instruct-v0.1 --pool strong=gpt-4-1106-preview --target 0.78
    modelyard routing fit --from-evals --pools slm,frontier            # eval_results + job_inputs
    modelyard routing fit --from-agreement slm,frontier                # shadow pairs and cascade escalations

The router uses it once the routing policy file has `learned: {models_dir: <the --out folder>}`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from modelyard.core._exceptions import ConfigError, InvalidInput
from modelyard.core.settings import Settings

OUTPUT_TOKENS = 8  # an answer's tokens, for ranking the pools by cost (a label or a letter is fewer)


def add_routing_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("routing", cmd_routing, "learn the per-item router (routing fit) from labelled outcomes")
    p.add_argument("action", choices=["fit"])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--recording", type=Path, help="a recording (docs/recordings.md) with the pools' models' scores"
    )
    source.add_argument(
        "--from-evals", action="store_true", help="eval_results joined with job_inputs (ClickHouse)"
    )
    source.add_argument(
        "--from-agreement", metavar="CHEAP,STRONG", help="shadow pairs and cascade escalations"
    )
    p.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="POOL=MODEL",
        help="with --recording: the recorded model a pool stands for (default: the pool's own model)",
    )
    p.add_argument(
        "--pools", default=None, help="with --from-evals: comma-separated pools (default: all configured)"
    )
    p.add_argument(
        "--target", type=float, default=None, help="accuracy to keep (default: the best pool's less 0.01)"
    )
    p.add_argument("--task", default="other", help="with --recording: the task type its items are routed as")
    p.add_argument("--tenant", default="default", help="with --recording: the tenant its items come from")
    p.add_argument("--category-key", default="category", help="the metadata key read as the item's category")
    p.add_argument("--out", type=Path, default=None, help="registry folder (default: <state_dir>/routing)")
    p.add_argument("--seed", type=int, default=0)


def cmd_routing(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops import routing_fit as fit
    from streams.learned_routing import RoutingRegistry

    pools, outcomes = _outcomes(settings, args)
    costs = _costs(settings, pools, [o.text for o in outcomes])
    model = fit.fit_router(outcomes, pools, costs, args.target, args.category_key, args.seed)
    version = RoutingRegistry(args.out or settings.state_dir / "routing").register(model)
    h = model.card.heldout
    out = Console()
    out.print(
        f"routing model {version}: {len(outcomes)} labelled items, pools (cheapest first) {model.card.pools}"
    )
    out.print(
        f"margin {model.card.margin:.4f} for target {args.target or 'best pool - 0.01'}; out of fold: accuracy "
        f"{h['measured_accuracy']:.3f} (expected {h['expected_accuracy']:.3f}), shares "
        f"{ {p: round(s, 3) for p, s in h['pool_shares'].items()} }, each pool alone "
        f"{ {p: round(a, 3) for p, a in h['pool_accuracy'].items()} }",
        highlight=False,
    )
    console.print(
        f"registered in {args.out or settings.state_dir / 'routing'}; use it with `learned: "
        f"{{models_dir: ...}}` in the routing policy file"
    )
    return 0


def _outcomes(settings: Settings, args: argparse.Namespace) -> tuple[list[str], list]:
    from modelyard.ops import routing_fit as fit

    if args.recording is not None:
        from workers.pools.backends.replay import read_recordings

        models = _pool_models(settings, args.pool)
        recordings = list(read_recordings(args.recording))
        return list(models), fit.outcomes_from_recordings(
            recordings, models, args.task, args.tenant, args.category_key
        )
    from workers.sink.analyst_store import open_analyst_store

    store = open_analyst_store(settings.clickhouse)
    try:
        if args.from_evals:
            pools = args.pools.split(",") if args.pools else sorted(settings.pools)
            return pools, fit.outcomes_from_evals(store, pools, args.category_key)
        cheap, _, strong = args.from_agreement.partition(",")
        if not strong:
            raise InvalidInput("--from-agreement: write CHEAP,STRONG (two pools)", field="from-agreement")
        return [cheap, strong], fit.outcomes_from_agreement(store, cheap, strong, args.category_key)
    finally:
        store.close()


def _pool_models(settings: Settings, pairs: list[str]) -> dict[str, str]:
    if not pairs:
        return {name: pool.model for name, pool in settings.pools.items()}
    models = {}
    for pair in pairs:
        pool, _, model = pair.partition("=")
        if not model:
            raise InvalidInput(f"--pool {pair!r}: write POOL=MODEL", field="pool")
        models[pool] = model
    return models


def _costs(settings: Settings, pools: list[str], texts: list[str]) -> list[float]:
    """USD per item per pool: the training items' mean prompt tokens and OUTPUT_TOKENS, at the catalog price of
    the pool's model (a pool missing from the settings or the catalog is refused)."""
    from schemas import Usage
    from workers.pools.token_counts import TokenCounter
    from workers.sink.pricing import PriceCatalog

    catalog, counter = PriceCatalog.load(settings.costs.prices_dir), TokenCounter()
    sample = texts[:: max(1, len(texts) // 2000)]
    prompt = round(sum(counter.count_many(sample)) / max(1, len(sample)))
    costs = []
    for pool in pools:
        if pool not in settings.pools:
            raise ConfigError(
                f"routing fit: pool {pool!r} is not configured; configured: {sorted(settings.pools)}"
            )
        rates = catalog.rates(settings.pools[pool].model, datetime.now(UTC))
        if rates is None:
            raise ConfigError(
                f"routing fit: the model of pool {pool} ({settings.pools[pool].model}) has no price"
            )
        costs.append(float(sum(rates.charge(Usage(input_tokens=prompt, output_tokens=OUTPUT_TOKENS)))))
    return costs
