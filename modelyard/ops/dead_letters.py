"""Dead-letter tooling behind `modelyard dlq list|show|replay`.

The dead-letter topic is read with a group-less consumer (nothing is committed, reading changes nothing), from
the first offset at or after `--since` up to the end offsets seen at start. Replay re-validates each letter's
original bytes with the router's admission (the letter's own signature, never re-signed), sends the valid ones to the jobs topic keyed by job_id (with a
header naming the letter they came from), and leaves the still-invalid ones where they are.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from modelyard.core._exceptions import InvalidInput
from modelyard.core.kafka import make_reader, started
from modelyard.core.settings import KafkaSettings
from modelyard.core.signatures import SIGNATURE_HEADER
from modelyard.core.topics import assigned_partitions
from schemas import DeadLetter
from schemas.rejection import Rejection
from streams.admission import Admission, Item, Source

REPLAY_HEADER = "modelyard-replay-of"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """'90s', '30m', '1h', '2d', '1w' ago, or an ISO 8601 timestamp (UTC when it has no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"cannot read {text!r} as a time; use 90s, 30m, 1h, 2d, 1w or an ISO 8601 time", field="since"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LetterFilter:
    reasons: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    offsets: frozenset[int] = frozenset()

    @property
    def selects_something(self) -> bool:
        return bool(self.reasons or self.stages or self.since or self.until or self.offsets)

    def matches(self, stored: StoredLetter) -> bool:
        if self.offsets and stored.offset not in self.offsets:
            return False
        letter = stored.letter
        if letter is None:  # not a DeadLetter at all: only unfiltered listings show it
            return not (self.reasons or self.stages)
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (not self.stages or letter.stage in self.stages)
            and (self.since is None or letter.at >= self.since)
            and (self.until is None or letter.at < self.until)
        )


@dataclass(frozen=True)
class StoredLetter:
    """One record of the dead-letter topic: the letter, or why the record is not one."""

    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter | None
    problem: str | None = None

    @classmethod
    def from_record(cls, partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> StoredLetter:
        try:
            return cls(partition, offset, timestamp_ms, DeadLetter.model_validate_json(value or b""))
        except ValidationError as exc:
            return cls(partition, offset, timestamp_ms, None, f"not a dead letter: {exc.errors()[0]['msg']}")

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.letter.original_b64) if self.letter else b""

    @property
    def source(self) -> str:
        letter = self.letter
        if letter is None:
            return "-"
        if letter.source_line is not None:
            return f"line {letter.source_line}"
        if letter.source_topic is not None:
            return f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
        return "-"

    @property
    def where(self) -> str:
        return f"{self.partition}:{self.offset}"

    def summary(self) -> dict[str, object]:
        letter = self.letter
        return {
            "partition": self.partition,
            "offset": self.offset,
            "stage": letter.stage if letter else None,
            "reason": letter.reason if letter else "not_a_dead_letter",
            "field": letter.field if letter else None,
            "error": letter.error if letter else self.problem,
            "job_id": letter.job_id if letter else None,
            "source": self.source,
            "at": letter.at.isoformat() if letter else None,
        }


def decoded_original(stored: StoredLetter) -> str:
    """The original bytes for a human: pretty JSON when they parse, else text with undecodable bytes escaped."""
    raw = stored.original
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="backslashreplace")


async def read_letters(
    kafka: KafkaSettings, selection: LetterFilter = LetterFilter(), limit: int | None = None
) -> list[StoredLetter]:
    """Matching letters, oldest first per partition; reads up to the end offsets seen when it starts."""
    topic = kafka.dead_letter_topic
    consumer = make_reader(kafka, topic, offset_reset="latest")
    await started(consumer, kafka)
    try:
        if topic not in await consumer.topics():
            return []
        partitions = sorted(await assigned_partitions(consumer), key=lambda tp: tp.partition)
        ends = await consumer.end_offsets(partitions)
        await _seek_start(consumer, partitions, selection.since)
        return await _read_until(consumer, ends, selection, limit)
    finally:
        await consumer.stop()


async def _seek_start(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> None:
    """From the beginning, or from the first record stamped at/after `since` (letters are stamped when written)."""
    if since is None:
        await consumer.seek_to_beginning(*partitions)
        return
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    for tp in partitions:
        if found.get(tp) is None:
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, found[tp].offset)


async def _read_until(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], selection: LetterFilter, limit: int | None
) -> list[StoredLetter]:
    letters: list[StoredLetter] = []
    remaining = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while remaining and (limit is None or len(letters) < limit):
        for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                stored = StoredLetter.from_record(tp.partition, record.offset, record.timestamp, record.value)
                if selection.matches(stored):
                    letters.append(stored)
        remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    return letters[:limit] if limit is not None else letters


def find_letter(letters: Iterable[StoredLetter], offset: int, partition: int) -> StoredLetter:
    for stored in letters:
        if (stored.partition, stored.offset) == (partition, offset):
            return stored
    raise InvalidInput(f"no dead letter at partition {partition} offset {offset}", field="offset")


# -- replay -------------------------------------------------------------------------------------------
@dataclass
class ReplayReport:
    dry_run: bool
    replayed: list[tuple[StoredLetter, str]] = field(default_factory=list)
    still_invalid: list[tuple[StoredLetter, Rejection]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.still_invalid


def recheck(stored: StoredLetter, admission: Admission) -> Item | Rejection:
    """Admit a letter's original again, as the router would (schema, tenant list, the signature it came with)."""
    letter = stored.letter
    if letter is None:
        return Rejection("not_a_dead_letter", None, stored.problem or "record is not a dead letter")
    if letter.original_truncated:
        return Rejection(
            "truncated",
            None,
            f"only the first {len(stored.original)} of {letter.original_bytes} bytes were kept",
        )
    signature = letter.signature.encode() if letter.signature else None  # its own: never re-signed
    where = Source(
        letter.source_topic or "", letter.source_partition or 0, letter.source_offset or 0, signature
    )
    return admission.admit(stored.original, where)


async def replay(
    kafka: KafkaSettings, admission: Admission, letters: list[StoredLetter], dry_run: bool = False
) -> ReplayReport:
    """Re-submit the letters whose originals are now valid work items; report the rest and leave them alone."""
    from modelyard.core.kafka import make_producer

    report = ReplayReport(dry_run)
    valid: list[tuple[StoredLetter, Item]] = []
    for stored in letters:
        checked = recheck(stored, admission)
        if isinstance(checked, Rejection):
            report.still_invalid.append((stored, checked))
        else:
            valid.append((stored, checked))
    if dry_run or not valid:
        report.replayed = [(stored, item.job_id) for stored, item in valid]
        return report
    producer = make_producer(kafka)
    await started(producer, kafka)
    try:
        for stored, item in valid:
            header = (
                REPLAY_HEADER,
                f"{kafka.dead_letter_topic}/{stored.partition}/{stored.offset}".encode(),
            )
            signed = (
                [(SIGNATURE_HEADER, stored.letter.signature.encode())]
                if stored.letter and stored.letter.signature
                else []
            )
            await producer.send_and_wait(
                kafka.jobs_topic,
                value=stored.original,
                key=item.job_id.encode(),
                headers=[header, *signed],
            )
            report.replayed.append((stored, item.job_id))
    finally:
        await producer.stop()
    return report
