"""`modelyard results [--follow] [--job ID] [--tenant T]`: results as they land on the results topic.

Every attempt is shown (a job that failed over or escalated has several; the last is final). Without
--follow it prints what the topic holds and stops at its end; with --follow it keeps waiting. Reading uses
no consumer group, so it changes nothing for the pipeline."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console

from modelyard.client.results import ResultReader, Start
from modelyard.core.settings import KafkaSettings
from schemas import Result


def matcher(job: str | None, tenant: str | None) -> Callable[[Result], bool]:
    return lambda r: (job is None or r.job_id == job) and (tenant is None or r.tenant == tenant)


def start_for(follow: bool, job: str | None, from_beginning: bool) -> Start:
    """Following everything starts at the end; a single job, or a plain listing, reads from the beginning."""
    return "beginning" if from_beginning or job is not None or not follow else "end"


async def tail_results(
    kafka: KafkaSettings,
    console: Console,
    *,
    follow: bool,
    job: str | None = None,
    tenant: str | None = None,
    from_beginning: bool = False,
    as_json: bool = False,
    limit: int | None = None,
) -> int:
    """Print matching results; returns how many were printed (stops after `limit` when given)."""
    reader = ResultReader(kafka, start_for(follow, job, from_beginning))
    printed = 0
    async for result in reader.tail(matcher(job, tenant), follow):
        if as_json:
            sys.stdout.write(result.model_dump_json() + "\n")
            sys.stdout.flush()
        else:
            console.print(line(result), highlight=False, markup=False, soft_wrap=True)
        printed += 1
        if limit is not None and printed >= limit:
            break
    return printed


def line(result: Result) -> str:
    final = "final" if result.status.is_final else "moved on"
    answer = (result.output or result.error or "").replace("\n", " ")
    answer = answer if len(answer) <= 80 else answer[:77] + "..."
    return (
        f"{result.completed_at:%H:%M:%S} {result.job_id} #{result.attempt} {result.tenant} "
        f"{result.pool}/{result.model} {result.status.value} ({final}) {result.latency_ms:,.0f} ms: {answer}"
    )
