"""`modelyard costs ...`: the ledger's analyst commands (chdb: through the sink's query server while it runs;
reprice writes, so with the sink stopped).

costs [show]                      cost tables with per-job savings, --by and --since, csv/json, --plot
costs jobs                        per-job cost against the reference model, least saved first
costs unpriced                    models stored unpriced (no catalog entry), and whether one matches now
costs reprice [--prices DIR]      price every attempt under a catalog (cost_repricings), and the unpriced ones
costs budgets                     spend today / this month against the tenants' budgets
costs price RESULT.json           the priced breakdown of one Result, by hand (no ClickHouse needed)
costs reconcile --provider P FILE ledger against the provider's usage/cost export, per day and model
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from modelyard.core._exceptions import InvalidInput
from modelyard.core.settings import Settings

PROVIDERS = ["openai", "anthropic"]
ACTIONS = {
    "show": "cost tables with per-job savings (the default)",
    "jobs": "per-job cost against the reference model, least saved first",
    "unpriced": "models whose results were stored unpriced, and whether the catalog prices them now",
    "reprice": "price every attempt since --since under a catalog (cost_repricings), and the unpriced ones",
    "budgets": "spend today and this month against the tenants' budgets",
    "price": "the priced breakdown of one Result JSON file (no ClickHouse needed)",
    "reconcile": "the ledger against a provider's usage/cost export, per day and model",
}


def add_costs_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "costs",
        cmd_costs,
        "cost tables from the ledger with per-job savings (also while the sink runs); unpriced models, "
        "repricing, one result's breakdown, reconciliation with a provider's usage export",
    )
    _options(p, None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    for name, help in ACTIONS.items():
        action = actions.add_parser(name, help=help, description=help)
        _options(action, argparse.SUPPRESS)  # given after the action; the defaults are the costs command's
        if name == "price":
            action.add_argument("result", type=Path, help="a Result as JSON ('-' for stdin)")
        if name == "reconcile":
            action.add_argument(
                "--provider", choices=PROVIDERS, required=True, help="whose export the files are"
            )
            action.add_argument(
                "--ledger-provider", help="the ledger's provider name for those calls (default: --provider)"
            )
            action.add_argument("exports", nargs="+", type=Path, help="usage and/or cost export JSON files")


def _options(p: argparse.ArgumentParser, suppressed: str | None) -> None:
    def default(value: object) -> object:
        return suppressed if suppressed is not None else value

    p.add_argument(
        "--by",
        default=default("day,pool,model"),
        help="comma-separated: day, tenant, task, pool, provider, model",
    )
    p.add_argument("--since", default=default("7d"), help="7d, 24h, 30m, 2w or an ISO date")
    p.add_argument("--format", choices=["table", "csv", "json"], default=default("table"))
    p.add_argument(
        "--plot", type=Path, default=default(None), help="show: also write a stacked bar chart (PNG) of cost"
    )
    p.add_argument(
        "--prices", type=Path, default=default(None), help="directory of price YAML files (default: settings)"
    )
    p.add_argument("--limit", type=int, default=default(20), help="jobs: how many jobs to list")


def cmd_costs(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from workers.sink.pricing import PriceCatalog

    args.action = args.action or "show"
    catalog = PriceCatalog.load(args.prices or settings.costs.prices_dir, settings.costs.reference_model)
    if args.action == "price":
        return _price(catalog, args.result, console)
    if args.action == "reconcile":
        return _reconcile(settings, args, catalog)
    return _ledger_action(settings, args, catalog, console)


def _ledger_action(settings: Settings, args: argparse.Namespace, catalog, console: Console) -> int:
    from modelyard.ops.cost_report import CostReport, parse_dimensions, parse_since, plot_stacked
    from workers.sink.analyst_store import open_analyst_store

    since, dims = parse_since(args.since), parse_dimensions(args.by)
    # reprice writes (cost_repricings, and prices the unpriced in the ledger): the engine itself, not the
    # sink's read-only query server
    store = open_analyst_store(settings.clickhouse, write=args.action == "reprice")
    try:
        report = CostReport(store)
        if args.action == "reprice":
            done = report.reprice(catalog, since)
            console.print(
                f"repriced {done.attempts} attempts since {since:%Y-%m-%d %H:%M} under {catalog.version}: "
                f"${done.billed_usd:,.6f} billed -> ${done.repriced_usd:,.6f} (table cost_repricings). "
                f"{done.newly_priced} unpriced attempts now priced in the ledger (${done.newly_priced_usd:,.6f}); "
                f"{done.still_unpriced} still without a price",
                highlight=False,
            )
            return 0
        table, title = {
            "budgets": lambda: (report.budgets(settings.costs.budgets), "budgets (today and this month)"),
            "unpriced": lambda: (report.unpriced(catalog), "results stored unpriced, by provider and model"),
            "jobs": lambda: (
                report.jobs(since, args.limit),
                f"jobs since {since:%Y-%m-%d}: cost vs reference",
            ),
            "show": lambda: (report.by(dims, since), f"costs since {since:%Y-%m-%d %H:%M} UTC by {args.by}"),
        }[args.action]()
    finally:
        store.close()
    print_table(table, args.format, title)
    if args.plot and args.action == "show":
        console.print(f"chart written to {plot_stacked(table, args.plot)}")
    return 0


def _price(catalog, path: Path, console: Console) -> int:
    from modelyard.ops.price_check import price_check, render
    from schemas import Result
    from schemas.decoding import decode
    from schemas.rejection import Rejection

    result = decode(Result, _read(path))
    if isinstance(result, Rejection):
        where = f" (field {result.field})" if result.field else ""
        raise InvalidInput(f"{path} is not a Result: {result.error}{where}", field=result.field or "files")
    check = price_check(catalog, result)
    render(check, Console(width=max(Console().width, 110)))
    return 0 if check.priced else 1


def _reconcile(settings: Settings, args: argparse.Namespace, catalog) -> int:
    from modelyard.ops.reconcile import reconcile
    from modelyard.ops.usage_exports import read_export
    from workers.sink.analyst_store import open_analyst_store

    export = read_export(args.provider, [(str(f), _read(f)) for f in args.exports])
    store = open_analyst_store(settings.clickhouse)
    try:
        table = reconcile(store, catalog, export, args.ledger_provider or args.provider)
    finally:
        store.close()
    print_table(table, args.format, f"{args.provider}: ledger vs invoice, per day and model (UTC)")
    return 0


def _read(path: Path) -> bytes:
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="files") from exc


def print_table(table, fmt: str, title: str) -> None:
    from modelyard.local.demo import cost_table

    if fmt == "csv":
        sys.stdout.write(table.to_csv())
    elif fmt == "json":
        sys.stdout.write(table.to_json() + "\n")
    else:
        Console(width=max(Console().width, 150)).print(cost_table(table.names, table.rows, title=title))
