"""`modelyard submit`: admit a JSONL file line by line (streams.admission: decoded once, a job_id repeating
an earlier line is a duplicate) and produce the valid jobs to Kafka.

Invalid lines are reported by line number and field and sent to the dead-letter topic with the reason;
none is silently skipped. Blank lines are not jobs and are counted in the summary."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from modelyard.client import AsyncClient, Delivery
from modelyard.core.progress import progress_bar
from modelyard.core.settings import KafkaSettings
from modelyard.core.topics import ensure_topics
from schemas import WorkItem
from schemas.decoding import decode
from schemas.rejection import Rejection
from streams.admission import Admission, Item, Source


@dataclass(frozen=True)
class InvalidLine:
    line: int
    rejection: Rejection


@dataclass
class SubmitSummary:
    submitted: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    blank: int = 0
    failed: list[Delivery] = field(default_factory=list)  # records Kafka did not store
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.invalid and not self.failed

    def count(self, delivery: Delivery) -> None:
        if not delivery.ok:
            self.failed.append(delivery)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line.strip()


class JobIdsInFile:
    """Admission's dedup for one file: a job_id that an earlier valid line used makes a line a duplicate."""

    def __init__(self) -> None:
        self.first_line: dict[str, int] = {}

    def evict(self) -> float:
        return 0.0

    def duplicate(self, job_id: str, partition: int, line: int, now: float) -> Rejection | None:
        if self.first_line.setdefault(job_id, line) == line:
            return None
        return Rejection("duplicate_job_id", "job_id", f"job_id {job_id!r} repeats an earlier line")

    def forget(self, job_id: str) -> None:
        self.first_line.pop(job_id, None)


def check_lines(lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, Item | Rejection]]:
    """Admit each line once (the pydantic model: what is sent is re-encoded from it); blank lines are not jobs."""
    admission = Admission(seen=JobIdsInFile(), decoder=_decode_work_item)
    for number, raw in lines:
        if not raw:
            yield number, raw, Rejection("blank", None, "blank line")
        else:
            yield number, raw, admission.admit(raw, Source("", 0, number))  # the line number is the position


def _decode_work_item(raw: bytes | None) -> WorkItem | Rejection:
    return decode(WorkItem, raw)


class JobSubmitter:
    """Produces a file's valid lines through the producer SDK (signed with the tenant keys this configuration
    holds, batched, every delivery checked) and dead-letters the invalid ones."""

    def __init__(
        self,
        kafka: KafkaSettings,
        pools: Collection[str],
        tenant_keys: dict[str, SecretStr] | None = None,
        console: Console | None = None,
    ) -> None:
        """pools: every topic is created first; tenant_keys: each job whose tenant's key we hold is signed."""
        self.kafka = kafka
        self.pools = pools
        self.tenant_keys = tenant_keys
        self.console = console or Console(stderr=True)

    async def submit_file(self, path: Path) -> SubmitSummary:
        total = sum(1 for _ in path.open("rb"))
        return await self.submit_lines(read_lines(path), total, source=str(path))

    async def submit_lines(
        self, lines: Iterable[tuple[int, bytes]], total: int, source: str
    ) -> SubmitSummary:
        summary, started = SubmitSummary(), time.perf_counter()
        await ensure_topics(self.kafka, self.pools)
        async with AsyncClient(self.kafka, tenant_keys=self.tenant_keys) as client:
            with progress_bar(self.console) as progress:
                task = progress.add_task(f"submitting {source}", total=total)
                for number, raw, item in check_lines(lines):
                    await self._send(client, summary, number, raw, item)
                    progress.advance(task)
        summary.seconds = time.perf_counter() - started
        return summary

    async def _send(self, client: AsyncClient, summary: SubmitSummary, number: int, raw: bytes, item) -> None:
        if isinstance(item, WorkItem):
            summary.submitted += 1
            await client.send(item, summary.count)
        elif item.reason == "blank":
            summary.blank += 1
        else:
            summary.invalid.append(InvalidLine(number, item))
            await client.dead_letter(item.dead_letter(raw, "submit", source_line=number), summary.count)


def print_summary(summary: SubmitSummary, console: Console, limit: int = 50) -> None:
    rate = summary.submitted / summary.seconds if summary.seconds else 0.0
    console.print(
        f"submitted {summary.submitted} jobs in {summary.seconds:.2f}s ({rate:,.0f}/s); "
        f"invalid {len(summary.invalid)} (sent to the dead-letter topic); blank lines {summary.blank}"
    )
    for delivery in summary.failed[:limit]:
        console.print(
            f"[red]not stored[/red] {delivery.job_id or 'dead letter'}: {delivery.error}", highlight=False
        )
    if not summary.invalid:
        return
    table = Table("line", "reason", "field", "error", title="invalid lines")
    for bad in summary.invalid[:limit]:
        table.add_row(str(bad.line), bad.rejection.reason, bad.rejection.field or "-", bad.rejection.error)
    console.print(table)
    if len(summary.invalid) > limit:
        console.print(f"... and {len(summary.invalid) - limit} more")
