"""The exact-result cache, pool side: identical requests within a TTL are answered without a model call.

Where it lives, and why (measured in benchmarks/result_cache.py, see the README): the entries are on a
compacted Kafka topic (`<prefix>.cache`, keyed by request digest, retention `kafka.cache_retention_s`), and
every pool process holds a bounded LRU copy that it restores from the topic at start and then follows. So the
cache is shared by every replica (each reads every entry), survives restarts (the topic keeps it), and a
lookup is a dict access in the pool's own memory. A ClickHouse lookup cannot serve here: pools never reach
ClickHouse, and the embedded engine admits one process per data path. A Faust table in the router would put
the lookup before the pool, but the key includes the model the pool calls, and the router would have to read
every result to fill it.

The key is a SHA-256 digest of: the scope (the tenant, or `*` when the policy makes the task shareable), the
task type, the normalised input (Unicode NFC, runs of whitespace as one space, ends stripped; per message for
chats), the labels in order, the JSON schema with sorted keys, the normalised instructions, the provider and
model the pool calls, and the sampling settings (output budget; temperature is always 0). So a tenant only
ever receives its own answers unless both tenants' policies share the task.

Only a fresh `ok` answer the pool keeps (not one it escalates) is stored. Identical requests in flight at once
in one process wait for the first one's answer (single flight) instead of calling too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer

from modelyard.core.kafka import make_reader
from modelyard.core.observability import RESULT_CACHE_BYTES, RESULT_CACHE_ENTRIES, RESULT_CACHE_LOOKUPS
from modelyard.core.settings import KafkaSettings, ResultCacheSettings
from schemas import Assignment, Result, ResultStatus, Usage
from schemas.cache import ENTRY_DECODER, ENTRY_ENCODER, CacheEntry
from schemas.result import NO_CALL, CacheOrigin, UsageStruct

log = logging.getLogger("modelyard.pool")
KEY_VERSION = 1  # bump when prompts change what an identical request is answered with
ENTRY_OVERHEAD_BYTES = 300  # the entry object, its key and the dict slot, roughly
Outgoing = tuple[str, bytes | None, bytes]


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def request_key(assignment: Assignment, provider: str, model: str, max_output_tokens: int) -> str | None:
    """The cache key of an assignment for this pool's model (None: the policy did not opt it in)."""
    directive = assignment.cache
    if directive is None:
        return None
    item = assignment.item
    material = {
        "v": KEY_VERSION,
        "scope": item.tenant if directive.scope == "tenant" else "*",
        "task": assignment.task_type.value,
        "input": normalised(item.input)
        if isinstance(item.input, str)
        else [[m.role, normalised(m.content)] for m in item.input],
        "labels": item.params.labels,
        "schema": item.params.json_schema,
        "instructions": normalised(item.params.instructions) if item.params.instructions else None,
        "provider": provider,
        "model": model,
        "sampling": {
            "max_output_tokens": item.params.max_output_tokens or max_output_tokens,
            "temperature": 0,
        },
    }
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResultCache:
    """Bounded LRU of cache entries by key: at most `max_entries` and `max_bytes` (answers plus overhead)."""

    def __init__(self, settings: ResultCacheSettings, max_age_s: float) -> None:
        self.settings = settings
        self.max_age_s = max_age_s  # the topic's retention: nothing older is ever used
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str, ttl_s: float, now: float) -> CacheEntry | None:
        entry = self.entries.get(key)
        if entry is None or now - entry.stored_at > min(ttl_s, self.max_age_s):
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        if len(entry.output) > self.settings.max_output_chars:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= _size(key, old)
        self.entries[key] = entry
        self.bytes += _size(key, entry)
        while len(self.entries) > self.settings.max_entries or self.bytes > self.settings.max_bytes:
            evicted_key, evicted = self.entries.popitem(last=False)
            self.bytes -= _size(evicted_key, evicted)

    def forget(self, key: str) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= _size(key, old)


def _size(key: str, entry: CacheEntry) -> int:
    return len(entry.output) + len(key) + ENTRY_OVERHEAD_BYTES


class CacheFeed:
    """Keeps a ResultCache in step with the cache topic: restore from the beginning, then follow."""

    def __init__(self, kafka: KafkaSettings, settings: ResultCacheSettings, cache: ResultCache) -> None:
        self.kafka = kafka
        self.settings = settings
        self.cache = cache
        self.consumer: AIOKafkaConsumer | None = None
        self.read = 0

    async def restore(self) -> int:
        """Read the topic up to its end as of now (at most `restore_timeout_s`); entries loaded."""
        self.consumer = make_reader(self.kafka, self.kafka.cache_topic)
        await self.consumer.start()
        ends = await self.consumer.end_offsets(list(await self._partitions()))
        deadline = time.monotonic() + self.settings.restore_timeout_s
        while any(await self._behind(ends)) and time.monotonic() < deadline:
            await self._read_once(500)
        if any(await self._behind(ends)):
            log.warning(
                "result cache: restore stopped after %.0fs; the rest loads while working",
                self.settings.restore_timeout_s,
            )
        return len(self.cache)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._read_once(500)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _partitions(self) -> set:
        assert self.consumer is not None
        deadline = time.monotonic() + 30
        while not self.consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return set(self.consumer.assignment())

    async def _behind(self, ends: dict) -> list[bool]:
        assert self.consumer is not None
        return [await self.consumer.position(tp) < end for tp, end in ends.items()]

    async def _read_once(self, timeout_ms: int) -> None:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        now = time.time()
        for records in batches.values():
            for record in records:
                self._load(record.key, record.value, now)
        RESULT_CACHE_ENTRIES.set(len(self.cache))
        RESULT_CACHE_BYTES.set(self.cache.bytes)

    def _load(self, key: bytes | None, value: bytes | None, now: float) -> None:
        self.read += 1
        if key is None:
            return
        if value is None:  # a tombstone
            self.cache.forget(key.decode())
            return
        try:
            entry = ENTRY_DECODER.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("result cache: unreadable entry skipped: %s", exc)
            return
        if now - entry.stored_at <= self.kafka.cache_retention_s:
            self.cache.put(key.decode(), entry)


class PoolCache:
    """The cache as one pool uses it: look up before calling, coalesce identical calls, store what it kept."""

    def __init__(
        self,
        pool: str,
        kafka: KafkaSettings,
        settings: ResultCacheSettings,
        target: tuple[str, str, int],  # the pool's own provider, model and default output budget
    ) -> None:
        self.pool = pool
        self.topic = kafka.cache_topic
        self.provider, self.model, self.max_output_tokens = target
        self.cache = ResultCache(settings, kafka.cache_retention_s)
        self.feed = CacheFeed(kafka, settings, self.cache)
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self._hits = RESULT_CACHE_LOOKUPS.labels(pool, "hit")
        self._misses = RESULT_CACHE_LOOKUPS.labels(pool, "miss")

    def key(self, assignment: Assignment) -> str | None:
        return request_key(assignment, self.provider, self.model, self.max_output_tokens)

    async def answer(
        self,
        assignment: Assignment,
        call: Callable[[], Awaitable[list[Result]]],
        keeps: Callable[[Result], bool],
    ) -> list[Result]:
        """The cached answer when there is one; else `call` (once per key at a time in this process), whose
        final result is stored when `keeps` it (an ok answer that is not escalated)."""
        key, started = self.key(assignment), time.perf_counter()
        if key is None:
            return await call()
        while (hit := self.lookup(assignment, key, started)) is None:
            leader = self._in_flight.get(key)
            if leader is None:
                break
            await asyncio.shield(leader)  # an identical request is being answered: wait for it
        if hit is not None:
            return [hit]
        self._misses.inc()
        done = self._in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            results = await call()
        finally:
            del self._in_flight[key]
            done.set_result(None)
        if keeps(results[-1]):
            self.cache.put(key, entry_of(results[-1]))
        return results

    def lookup(self, assignment: Assignment, key: str, started: float) -> Result | None:
        assert assignment.cache is not None
        entry = self.cache.get(key, assignment.cache.ttl_s, time.time())
        if entry is None:
            return None
        self._hits.inc()
        return cached_result(assignment, self.pool, entry, started)

    def outgoing(
        self, assignment: Assignment, final: Result, keeps: Callable[[Result], bool]
    ) -> list[Outgoing]:
        """The cache-topic record for a fresh answer the pool keeps (produced with its Result)."""
        if final.cached or not keeps(final):
            return []
        key = self.key(assignment)
        if key is None:
            return []
        entry = self.cache.entries.get(key) or entry_of(final)
        return [(self.topic, key.encode(), ENTRY_ENCODER.encode(entry))]


def entry_of(result: Result) -> CacheEntry:
    usage = result.usage
    return CacheEntry(
        output=result.output or "",
        confidence=result.confidence,
        origin_job_id=result.job_id,
        origin_attempt=result.attempt,
        provider=result.provider,
        model=result.model,
        usage=UsageStruct(**usage.model_dump()),
        batch=result.batch,
        answered_at=result.completed_at.isoformat(),
        stored_at=time.time(),
    )


def cached_result(assignment: Assignment, pool: str, entry: CacheEntry, started: float) -> Result:
    """A Result for `assignment` from a cache entry: no tokens of its own, the origin's on `cached_from`."""
    item, usage = assignment.item, entry.usage
    return Result(
        job_id=item.job_id,
        attempt=assignment.attempt,
        tenant=item.tenant,
        task_type=assignment.task_type,
        pool=pool,
        provider=entry.provider,
        model=entry.model,
        status=ResultStatus.OK,
        output=entry.output,
        confidence=entry.confidence,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        completed_at=datetime.now(UTC),
        cached=True,
        call_id=NO_CALL,  # no provider call: a replayed hit repeats this key and adds no ledger row
        cached_from=CacheOrigin(
            job_id=entry.origin_job_id,
            attempt=entry.origin_attempt,
            provider=entry.provider,
            model=entry.model,
            usage=Usage(**msgspec.structs.asdict(usage)),
            batch=entry.batch,
            completed_at=entry.answered_at,
        ),
    )
