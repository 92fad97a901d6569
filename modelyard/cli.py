"""The `modelyard` command. Each subcommand is a thin call into the wired components (modelyard.app)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from rich.console import Console

from modelyard.cli_costs import add_costs_command
from modelyard.cli_dlq import add_dlq_command
from modelyard.cli_live import add_live_commands
from modelyard.cli_routing import add_routing_command
from modelyard.core._exceptions import InvalidInput, ModelyardError
from modelyard.core.settings import Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        code = int(args.handler(load_settings(), args, console) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
        return code
    except ModelyardError as exc:
        console.print(f"[red]error:[/red] {exc.one_line()}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `modelyard schema work-item | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as `yes | head` reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelyard", description="Bulk LLM work: Kafka in, model pools, costs in ClickHouse."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = command("schema", cmd_schema, "print the JSON Schema of a wire message")
    p.add_argument(
        "name", nargs="?", default="work-item", choices=["work-item", "assignment", "result", "dead-letter"]
    )
    p = command("submit", cmd_submit, "validate a JSONL file of work items and produce them to Kafka")
    p.add_argument("file", type=Path)
    p = command("broker", cmd_broker, "start, stop or check the local Kafka broker (KRaft, no Docker)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument(
        "--brokers", type=int, default=None, help="nodes of a local cluster (3: replicated, min ISR 2)"
    )
    p = command(
        "slm", cmd_slm, "the SLM pool's vLLM server on CPU: prepare the packaged model, serve, stop, status"
    )
    p.add_argument("action", choices=["prepare", "serve", "stop", "status"])
    command("topics", cmd_topics, "create modelyard's topics (idempotent)")
    command("router", lambda s, a, c: _run("run_router", s), "run the Faust router process")
    p = command("pool", lambda s, a, c: _run("run_pool", s, a.name), "run one worker pool process")
    p.add_argument("name")
    command("sink", lambda s, a, c: _run("run_sink", s), "run the ClickHouse sink process")
    command("simulator", lambda s, a, c: _run("run_simulator", s), "run the local OpenAI/Anthropic simulator")
    command("migrate", cmd_migrate, "apply ClickHouse migrations")
    p = command(
        "sql", cmd_sql, "run a query on the configured ClickHouse (chdb: through the sink while it runs)"
    )
    p.add_argument("query")
    p.add_argument("--format", choices=["table", "json"], default="table")
    add_costs_command(command)
    add_routing_command(command)
    p = command(
        "deferred", cmd_deferred, "release items parked by a budget's 'defer' action back to the jobs topic"
    )
    p.add_argument("action", choices=["release"])
    p = command(
        "eval", cmd_eval, "run labelled cases through pools via the pipeline; score accuracy, cost, latency"
    )
    p.add_argument(
        "dataset", type=Path, help='JSONL: {"item": <work item>, "expected": <label | object | text>}'
    )
    p.add_argument("--pools", default="slm,frontier", help="comma-separated pools to evaluate")
    p.add_argument("--run", default=None, help="run name (default: eval-<UTC time>)")
    p.add_argument("--timeout", type=float, default=600)
    p = command("policy", cmd_policy, "recommend a routing policy from eval results")
    p.add_argument("action", choices=["recommend"])
    p.add_argument("--target-quality", type=float, default=0.95)
    p.add_argument("--run", default=None, help="eval run (default: the latest)")
    p.add_argument("--slm-pool", default="slm")
    p.add_argument("--frontier-pool", default="frontier")
    p.add_argument("--out", type=Path, default=Path("recommended-policy.yaml"))
    p = command(
        "distill",
        cmd_distill,
        "train the CPU student on frontier answers; register it and propose a route when it agrees enough",
    )
    p.add_argument(
        "--task", required=True, choices=["classification"], help="task type to distill (students classify)"
    )
    p.add_argument(
        "--target", type=float, default=None, help="held-out agreement needed (default distill.target, 0.95)"
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="share of distinct inputs held out (default distill.holdout, 0.2)",
    )
    p.add_argument("--pool", default=None, help="pool that serves the student (default distill.pool, slm)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="proposed policy YAML (default <state_dir>/proposed-policy-<task>.yaml)",
    )
    p = command(
        "report",
        cmd_report,
        "write an HTML report: cost/quality frontier per task, cost by pool and day, shadow agreement",
    )
    p.add_argument("--out", type=Path, default=Path("report.html"))
    p.add_argument("--run", default=None, help="eval run for the frontier plots (default: the latest)")
    p.add_argument("--target-quality", type=float, default=0.95, help="marks the recommended pool per task")
    p.add_argument("--since", default="30d", help="cost and agreement window: 7d, 24h, 30d or an ISO date")
    p = command("route", cmd_route, "show how the router would route one work item, rule by rule")
    p.add_argument("item", type=Path, help="a JSON file with one work item ('-' for stdin)")
    p.add_argument(
        "--explain", action="store_true", help="print every rule checked and why (the default output)"
    )
    p = command("demo", cmd_demo, "run the whole pipeline on a bundled sample and print costs")
    p.add_argument("--limit", type=int, default=None, help="submit only the first N sample lines")
    p.add_argument(
        "--distill", action="store_true", help="the distillation loop: frontier first, distill, student after"
    )
    p.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="with --distill: a labelled JSONL ({text, label}, e.g. modelyard/data/labelled/banking77.jsonl); "
        "the frontier answers its ground truth and accuracy against it is shown",
    )
    add_dlq_command(command)  # list, show, replay
    add_live_commands(command)  # up, down, status, top, results
    return parser


def _run(name: str, settings: Settings, *args: str) -> int:
    from modelyard import app

    getattr(app, name)(settings, *args)
    return 0


def cmd_schema(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from schemas import SCHEMAS

    print(json.dumps(SCHEMAS[args.name].model_json_schema(), indent=2))
    return 0


def cmd_submit(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops.submit import JobSubmitter, print_summary

    if not args.file.is_file():
        raise ModelyardError(
            f"no such file: {args.file}", hint="pass a JSONL file with one work item per line"
        )
    submitter = JobSubmitter(settings.kafka, settings.pools, settings.router.tenant_keys, console)
    summary = asyncio.run(submitter.submit_file(args.file))
    print_summary(summary, console)
    return 0 if summary.ok else 1


def cmd_slm(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.slm_server import CpuSlmServer

    server = CpuSlmServer(settings.slm_server, settings.state_dir, settings.logs_dir)
    url = settings.slm_server.url
    if args.action in ("prepare", "serve"):
        with console.status(
            f"converting {settings.slm_server.weights_package}'s GGUF to safetensors (~30 s)..."
        ):
            converted = server.prepare()
        console.print(f"model {'converted to' if converted else 'already in'} {server.model_dir}")
    if args.action == "serve":
        with console.status("starting vLLM on CPU...") as status:
            started = server.start(
                on_wait=lambda s: status.update(f"starting vLLM on CPU... {s:.0f} s (log: {server.log_file})")
            )
        console.print(
            f"vLLM {'started' if started else 'already serving'} {settings.slm_server.served_model_name} on {url}"
        )
        console.print(
            f"point the pool at it: MODELYARD_PROVIDERS__VLLM__BASE_URL={url}",
            highlight=False,
            soft_wrap=True,
        )
    elif args.action == "stop":
        console.print(
            "vLLM stopped" if server.stop() else "no vLLM server started from this state directory is running"
        )
    elif args.action == "status":
        ready = server.is_ready()
        console.print(
            f"vLLM on {url}: {'serving ' + settings.slm_server.served_model_name if ready else 'not serving'}"
        )
        return 0 if ready else 1
    return 0


def cmd_broker(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.broker import LocalKafkaBroker

    config = settings.local_broker
    if args.brokers:
        config = config.model_copy(update={"brokers": args.brokers})
    broker = LocalKafkaBroker(config, settings.kafka)
    where = broker.bootstrap_servers
    if args.action == "start":
        with console.status(f"starting Kafka on {where}..."):
            started = broker.start()
        console.print(
            f"Kafka {'started' if started else 'already running'} on {where} (data in {broker.data_dir})"
        )
        if len(broker.nodes) > 1:
            console.print(
                f"clients: MODELYARD_KAFKA__BOOTSTRAP_SERVERS={where} MODELYARD_KAFKA__REPLICATION_FACTOR="
                f"{min(3, len(broker.nodes))} MODELYARD_KAFKA__MIN_INSYNC_REPLICAS={min(2, len(broker.nodes))}"
            )
    elif args.action == "stop":
        console.print(
            "Kafka stopped" if broker.stop() else "no broker started from this directory is running"
        )
    else:
        running = broker.is_running()
        console.print(f"Kafka on {where}: {'running' if running else 'not running'}")
        return 0 if running else 1
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.core.topics import ensure_topics

    for name, partitions in asyncio.run(ensure_topics(settings.kafka, settings.pools)).items():
        console.print(f"{name}: {partitions} partitions")
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from workers.sink.clickhouse import ClickHouseStore

    store = ClickHouseStore(settings.clickhouse)
    try:
        console.print(f"applied migrations: {store.migrate() or 'none (up to date)'}")
    finally:
        store.close()
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.demo import cost_table
    from workers.sink.analyst_store import open_analyst_store

    store = open_analyst_store(settings.clickhouse)
    try:
        names, rows = store.query_with_names(args.query)
    finally:
        store.close()
    if args.format == "json":
        sys.stdout.write(
            json.dumps([dict(zip(names, row, strict=False)) for row in rows], default=str) + "\n"
        )
    else:
        Console().print(cost_table(names, rows, title=""))
    return 0


def cmd_deferred(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops.deferred import release_deferred

    moved = asyncio.run(
        release_deferred(settings.kafka, settings.pools, settings.group_id("deferred-release"))
    )
    console.print(
        f"released {moved} deferred items to {settings.kafka.jobs_topic} (the router checks budgets again)"
    )
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from datetime import UTC, datetime

    from modelyard.local.demo import cost_table
    from modelyard.ops.evaluation import EvalRunner, load_cases, summarise
    from workers.sink.pricing import PriceCatalog

    cases = load_cases(args.dataset)
    run = args.run or "eval-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    catalog = PriceCatalog.load(settings.costs.prices_dir, settings.costs.reference_model)
    runner = EvalRunner(settings.kafka, settings.pools, catalog, console)
    scores = asyncio.run(runner.run(cases, pools, run, args.timeout))
    names, rows = summarise(scores)
    Console(width=max(Console().width, 150)).print(
        cost_table(names, rows, f"eval run {run}: {len(cases)} cases x {len(pools)} pools")
    )
    console.print(
        f"scores sent to {settings.kafka.evals_topic}; the sink writes them to eval_results (run {run})"
    )
    return 0


def cmd_policy(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops import policy_advisor as advisor
    from workers.sink.analyst_store import open_analyst_store

    store = open_analyst_store(settings.clickhouse)
    try:
        run = args.run or advisor.latest_run(store)
        if run is None:
            raise InvalidInput("no eval results yet", field="run")
        chosen = advisor.choose_pools(advisor.load_quality(store, run), args.target_quality)
        pairs = advisor.load_pairs(store, run, args.slm_pool, args.frontier_pool)
    finally:
        store.close()
    cascades = {t: c for t, p in pairs.items() if (c := advisor.calibrate_cascade(p, args.target_quality))}
    args.out.write_text(
        advisor.policy_yaml(chosen, args.frontier_pool, cascades, args.slm_pool, args.frontier_pool)
    )
    out = Console()
    for task, rec in chosen.items():
        q = rec.quality
        out.print(
            f"{task}: {q.pool} ({q.model}) accuracy {q.accuracy:.3f}, ${q.cost_per_case:.8f}/case: {rec.reason}"
        )
    for task, c in cascades.items():
        out.print(
            f"cascade {task}: threshold {c.threshold:.3f} -> held-out quality {c.quality:.3f} at ${c.cost:.8f}/case, "
            f"{c.escalated:.0%} escalated; all-frontier {c.frontier_quality:.3f} at ${c.frontier_cost:.8f}/case"
        )
    console.print(f"policy written to {args.out} (use it with MODELYARD_ROUTER__POLICY_FILE={args.out})")
    return 0


def cmd_route(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.app import build_decider
    from schemas import WorkItem
    from schemas.decoding import decode
    from schemas.rejection import Rejection
    from streams.cache_policy import cache_policy_of, directive
    from streams.novelty_explain import explain_novelty

    raw = sys.stdin.buffer.read() if str(args.item) == "-" else _read_bytes(args.item)
    item = decode(WorkItem, raw)
    if isinstance(item, Rejection):
        raise InvalidInput(f"invalid work item ({item.reason}): {item.error}", field=item.field)
    decider = build_decider(settings)
    learned = decider.novelty.load(settings.novelty_state_file)
    decision = decider.decide(item, learn=False)
    out = Console()
    out.print(f"task type: [bold]{decision.task_type.value}[/bold] ({decision.task_reason})")
    out.print(
        f"features: input_tokens~{decision.features.input_tokens} priority={decision.features.priority} "
        f"labels={decision.features.label_count} deadline={decision.features.deadline or '-'}"
    )
    for check in decision.checks:
        mark = "[red]x[/red]" if check.failure else "[green]v[/green]"
        out.print(
            f"  {mark} {check.scope} rule {check.rule} -> {check.pool}"
            + (f": {check.failure}" if check.failure else "")
        )
    found = decider.learned_model(decider.source.current())
    if found is not None:
        router, model = found
        for line in router.explain(model, decision.task_type.value, decision.pool, item):
            out.print(line, highlight=False, markup=False)
    novelty = decider.source.current().novelty
    why = explain_novelty(decision, novelty, decider.novelty, settings.novelty_state_file, learned)
    out.print(f"novelty: {why}", highlight=False, markup=False)
    out.print(
        f"pool: [bold]{decision.pool}[/bold] via {decision.rule}: {decision.reason} -> topic {settings.kafka.pool_topic(decision.pool)}"
    )
    cache = directive(cache_policy_of(decider.source.current(), item.tenant), decision.task_type)
    out.print(
        "result cache: off for this tenant and task"
        if cache is None
        else f"result cache: on, answers up to {cache['ttl_s']:g}s old, scope {cache['scope']}"
    )
    return 0


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelyardError(
            f"cannot read {path}: {exc.strerror}", hint="pass a JSON file with one work item"
        ) from exc


def cmd_distill(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops.distill import Distiller, write_proposal
    from schemas import TaskType
    from workers.pools.model_registry import ModelRegistry
    from workers.sink.analyst_store import open_analyst_store

    task, config = TaskType(args.task), settings.distill
    target, holdout = args.target or config.target, args.holdout or config.holdout
    if not 0 < holdout < 1 or not 0 < target <= 1:
        raise InvalidInput("--holdout must be in (0, 1) and --target in (0, 1]", field="holdout")
    store = open_analyst_store(settings.clickhouse, write=True)
    try:
        with console.status(f"training the {task.value} student on answers of {config.teacher_pools}..."):
            outcome = Distiller(config, ModelRegistry(settings.models_dir, config.encoder_dir), store).run(
                task, target, holdout
            )
    finally:
        store.close()
    from modelyard.ops.distill import outcome_table

    Console().print(outcome_table(outcome))
    if not outcome.registered:
        console.print(f"[yellow]not registered[/yellow]: {outcome.reason}", highlight=False)
        return 1
    pool = args.pool or config.pool
    out = args.out or settings.state_dir / f"proposed-policy-{task.value}.yaml"
    diff, _ = write_proposal(settings, task, pool, out, outcome)
    console.print(f"{outcome.reason} ({outcome.registration.path}, table model_registry)", highlight=False)
    sys.stdout.write(diff)
    console.print(
        f"proposed policy written to {out}; apply it with MODELYARD_ROUTER__POLICY_FILE={out} "
        "(or copy it over the current policy file: routers reload it)",
        highlight=False,
    )
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops.cost_report import parse_since
    from modelyard.ops.report import HtmlReport
    from workers.sink.analyst_store import open_analyst_store

    store = open_analyst_store(settings.clickhouse)
    try:
        with console.status("reading ClickHouse and drawing plots..."):
            html = HtmlReport(store, args.target_quality, settings.shadow_alert.threshold).render(
                args.run, parse_since(args.since)
            )
    finally:
        store.close()
    args.out.write_text(html, encoding="utf-8")
    console.print(f"report written to {args.out} ({len(html) / 1024:,.0f} KiB, self-contained)")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.local.demo import Demo

    if args.dataset is not None and (not args.distill or not args.dataset.is_file()):
        why = "is only read with --distill" if not args.distill else "is not a file"
        raise InvalidInput(f"--dataset {args.dataset} {why}", field="dataset")
    if args.distill:
        from modelyard.local.distill_demo import DistillDemo

        return DistillDemo(settings, Console(width=max(Console().width, 150)), args.dataset).run()
    Demo(settings, Console(width=max(Console().width, 150)), limit=args.limit).run()
    return 0
