"""`modelyard dlq list|show|replay`: dead letters on the dead-letter topic, read and replayed through admission."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from rich.console import Console

from modelyard.core._exceptions import InvalidInput
from modelyard.core.settings import Settings


def add_dlq_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    parser = command("dlq", None, "list, show or replay dead letters")
    actions = parser.add_subparsers(required=True, metavar="ACTION")

    def filters(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--reason", action="append", default=[], help="only this reason (repeatable), e.g. validation"
        )
        p.add_argument(
            "--stage",
            action="append",
            default=[],
            choices=["submit", "router", "pool", "sink"],
            help="only this stage (repeatable)",
        )
        p.add_argument("--since", help="only letters written since: 90s, 30m, 1h, 2d or an ISO 8601 time")
        p.add_argument("--until", help="only letters written before: same forms as --since")
        return p

    p = filters(actions.add_parser("list", help="a table of dead letters"))
    p.set_defaults(handler=cmd_dlq_list)
    p.add_argument(
        "--limit", type=int, default=1000, help="at most N letters, oldest first (default 1000; 0: no limit)"
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = actions.add_parser("show", help="one dead letter with its decoded original")
    p.set_defaults(handler=cmd_dlq_show)
    p.add_argument("offset", type=int)
    p.add_argument("--partition", type=int, default=0)
    p = filters(
        actions.add_parser("replay", help="validate originals again; send the valid ones to the jobs topic")
    )
    p.set_defaults(handler=cmd_dlq_replay)
    p.add_argument(
        "--offset", type=int, action="append", default=[], help="only the letter at this offset (repeatable)"
    )
    p.add_argument("--all", action="store_true", help="replay every letter when no filter is given")
    p.add_argument("--dry-run", action="store_true", help="report what would be replayed; send nothing")


def _letter_filter(args: argparse.Namespace):
    from modelyard.ops.dead_letters import LetterFilter, parse_when

    return LetterFilter(
        reasons=frozenset(args.reason),
        stages=frozenset(args.stage),
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        offsets=frozenset(getattr(args, "offset", []) or []),
    )


def cmd_dlq_list(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from modelyard.ops.dead_letters import read_letters

    letters = asyncio.run(read_letters(settings.kafka, _letter_filter(args), args.limit or None))
    if args.format == "json":
        sys.stdout.write(json.dumps([stored.summary() for stored in letters]) + "\n")
        return 0
    more = " (the limit; --limit N shows more)" if args.limit and len(letters) >= args.limit else ""
    table = Table(
        "offset",
        "stage",
        "reason",
        "field",
        "error",
        "source",
        title=f"{settings.kafka.dead_letter_topic}: {len(letters)} letters{more}",
    )
    for stored in letters:
        row = stored.summary()
        table.add_row(
            stored.where,
            str(row["stage"] or "-"),
            str(row["reason"]),
            str(row["field"] or "-"),
            str(row["error"]),
            stored.source,
        )
    Console().print(table)
    return 0


def cmd_dlq_show(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.ops.dead_letters import LetterFilter, decoded_original, find_letter, read_letters

    stored = find_letter(
        asyncio.run(read_letters(settings.kafka, LetterFilter(offsets=frozenset({args.offset})))),
        args.offset,
        args.partition,
    )
    out = Console()
    for name, value in stored.summary().items():
        out.print(f"[bold]{name}[/bold]: {value if value is not None else '-'}", highlight=False)
    if stored.letter is not None:
        truncated = " (truncated)" if stored.letter.original_truncated else ""
        out.print(
            f"[bold]original[/bold] ({stored.letter.original_bytes} bytes{truncated}):", highlight=False
        )
        out.print(decoded_original(stored), markup=False, highlight=False)
    return 0


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace, console: Console) -> int:
    from modelyard.app import build_admission
    from modelyard.ops.dead_letters import read_letters, replay

    selection = _letter_filter(args)
    if not selection.selects_something and not args.all:
        raise InvalidInput("replay needs a filter (--reason, --stage, --since, --until, --offset) or --all")
    letters = asyncio.run(read_letters(settings.kafka, selection))
    admission = build_admission(settings, replay=True)
    report = asyncio.run(replay(settings.kafka, admission, letters, dry_run=args.dry_run))
    verb = "would replay" if report.dry_run else "replayed"
    for stored, job_id in report.replayed:
        console.print(
            f"{verb} {stored.where} -> {settings.kafka.jobs_topic} (job_id {job_id})", highlight=False
        )
    for stored, rejection in report.still_invalid:
        where = f" ({rejection.field})" if rejection.field else ""
        console.print(
            f"[yellow]still invalid[/yellow] {stored.where}: {rejection.reason}{where}: {rejection.error}",
            highlight=False,
        )
    console.print(
        f"{verb} {len(report.replayed)}; still invalid {len(report.still_invalid)} (left in {settings.kafka.dead_letter_topic})"
    )
    return 0 if report.ok else 1
