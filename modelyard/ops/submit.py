"""`modelyard submit`: admit a JSONL file line by line (streams.admission: decoded once, a job_id repeating
an earlier line is a duplicate) and produce the valid jobs to Kafka.

Invalid lines are reported by line number and field and sent to the dead-letter topic with the reason;
none is silently skipped. Blank lines are not jobs and are counted in the summary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from modelyard.core.kafka import make_producer
from modelyard.core.progress import progress_bar
from modelyard.core.settings import KafkaSettings
from modelyard.core.signatures import TenantKeys
from modelyard.core.topics import ensure_topics
from schemas import WorkItem
from schemas.decoding import decode
from schemas.rejection import Rejection
from streams.admission import Admission, Item, Source

FLUSH_EVERY = 2000


@dataclass(frozen=True)
class InvalidLine:
    line: int
    rejection: Rejection


@dataclass
class SubmitSummary:
    submitted: int = 0
    invalid: list[InvalidLine] = field(default_factory=list)
    blank: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.invalid


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
        self.console = console or Console(stderr=True)
        self.keys = TenantKeys(tenant_keys) if tenant_keys is not None else None

    async def submit_file(self, path: Path) -> SubmitSummary:
        total = sum(1 for _ in path.open("rb"))
        return await self.submit_lines(read_lines(path), total, source=str(path))

    async def submit_lines(
        self, lines: Iterable[tuple[int, bytes]], total: int, source: str
    ) -> SubmitSummary:
        summary, started = SubmitSummary(), time.perf_counter()
        await ensure_topics(self.kafka, self.pools)
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            with progress_bar(self.console) as progress:
                task = progress.add_task(f"submitting {source}", total=total)
                pending: list[asyncio.Future[object]] = []
                for number, raw, item in check_lines(lines):
                    pending.append(await self._send(producer, summary, number, raw, item))
                    progress.advance(task)
                    if len(pending) >= FLUSH_EVERY:
                        await asyncio.gather(*pending)
                        pending.clear()
                await asyncio.gather(*pending)
        finally:
            await producer.stop()
        summary.seconds = time.perf_counter() - started
        return summary

    async def _send(
        self, producer, summary: SubmitSummary, number: int, raw: bytes, item
    ) -> asyncio.Future[object]:
        kafka = self.kafka
        if isinstance(item, WorkItem):
            summary.submitted += 1
            value = item.with_submitted_at(datetime.now(UTC)).model_dump_json(exclude_none=True).encode()
            headers = self.keys.headers_for(item.tenant, value) if self.keys else None
            return await producer.send(
                kafka.jobs_topic, value=value, key=item.job_id.encode(), headers=headers
            )
        if item.reason == "blank":
            summary.blank += 1
            return _done()
        summary.invalid.append(InvalidLine(number, item))
        letter = item.dead_letter(raw, "submit", source_line=number)
        return await producer.send(kafka.dead_letter_topic, value=letter.model_dump_json().encode())


def _done() -> asyncio.Future[object]:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def print_summary(summary: SubmitSummary, console: Console, limit: int = 50) -> None:
    rate = summary.submitted / summary.seconds if summary.seconds else 0.0
    console.print(
        f"submitted {summary.submitted} jobs in {summary.seconds:.2f}s ({rate:,.0f}/s); "
        f"invalid {len(summary.invalid)} (sent to the dead-letter topic); blank lines {summary.blank}"
    )
    if not summary.invalid:
        return
    table = Table("line", "reason", "field", "error", title="invalid lines")
    for bad in summary.invalid[:limit]:
        table.add_row(str(bad.line), bad.rejection.reason, bad.rejection.field or "-", bad.rejection.error)
    console.print(table)
    if len(summary.invalid) > limit:
        console.print(f"... and {len(summary.invalid) - limit} more")
