"""RoutingPolicy: every input record becomes exactly one output record, in three steps:

    admission (streams/admission.py)  decode, tenant list, signature, dedup, job ids routed before -> the item,
                                      or a Rejection
    decision  (streams/decision.py)   rules, novelty, budgets (reserving estimates), shadow sampling -> which pool
    output    (streams/output.py)     assignment records, shadow copies, deferred items, dead letters

Every item sent to a pool is put on record (streams/routed_jobs.py): `routed_records()` gives a batch's records,
which the engines produce with its assignments.

No Faust here: both router engines, `modelyard route --explain` and the tests call the same code;
modelyard.app builds the three parts from their settings.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from modelyard.core.budgets import BudgetBook
from modelyard.core.observability import routed_to
from modelyard.core.signatures import TenantKeys
from schemas.rejection import Rejection
from streams.admission import Admission, Item, Source
from streams.decision import Decision, Deferral, PolicySource, PoolDecider
from streams.novelty import NoveltyDetector
from streams.output import Outgoing, OutputRecords

__all__ = ["Decision", "Outgoing", "RoutingPolicy", "Source"]
log = logging.getLogger("modelyard.router")


class RoutingPolicy:
    def __init__(self, admission: Admission, decider: PoolDecider, output: OutputRecords) -> None:
        self.admission = admission
        self.decider = decider
        self.output = output
        self._routed: Counter[str] = Counter()  # routed per pool in the current batch, counted once per batch

    @property
    def tenant_keys(self) -> TenantKeys | None:
        return self.admission.tenant_keys

    @property
    def source(self) -> PolicySource:
        return self.decider.source

    @property
    def novelty(self) -> NoveltyDetector:
        return self.decider.novelty

    @property
    def budgets(self) -> BudgetBook | None:
        """The tenants' spend as the sink publishes it; None when no budget is configured."""
        return self.decider.budgets.guard.book if self.decider.budgets is not None else None

    def decide(self, item: Item, now: datetime | None = None, learn: bool = True) -> Decision:
        return self.decider.decide(item, now, learn)

    def decide_many(self, items: list[Item], now: datetime, learn: bool = True) -> list[Decision]:
        return self.decider.decide_many(items, now, learn)

    def save_novelty(self, path: Path) -> None:
        self.decider.save_novelty(path)

    def routed_records(self) -> list[Outgoing]:
        """The routed-jobs records of the items sent to pools since the last call (streams/routed_jobs.py): the
        engines produce them with the batch's assignments, before its offsets are committed."""
        routed = self.admission.routed
        return self.output.routed_jobs(routed.records()) if routed is not None else []

    def route(self, raw: bytes | None, source: Source) -> Outgoing:
        """One input record -> one output record (its pool's topic, or the dead-letter topic). Never raises."""
        return self.route_many([(raw, source)])[0]

    def route_many(self, records: list[tuple[bytes | None, Source]]) -> list[Outgoing]:
        """One output per input record, in order. Never raises: a defect of ours must not make Faust ack and
        drop records, so a failing batch is routed again one record at a time, and a failing record becomes
        a dead letter (a replayed position is not a duplicate, so routing again is safe)."""
        try:
            return self._route_many(records)
        except Exception as exc:
            if len(records) > 1:
                log.exception("router failed on a batch of %d records; routing them one by one", len(records))
                return [self.route(raw, source) for raw, source in records]
            raw, source = records[0]
            log.exception("router failed on %s", source)
            error = Rejection("router_error", None, f"{type(exc).__name__}: {exc}")
            return [self.output.dead_letter(error, raw, source)]

    def _route_many(self, records: list[tuple[bytes | None, Source]]) -> list[Outgoing]:
        now, clock, self._routed = datetime.now(UTC), self.admission.clock(), Counter()
        admit = self.admission.admit
        checked = [admit(raw, source, clock) for raw, source in records]
        valid = [k for k, item in enumerate(checked) if not isinstance(item, Rejection)]
        decisions = self.decide_many([checked[k] for k in valid], now)  # type: ignore[misc]
        if len(valid) == len(records):  # the usual batch: nothing to interleave
            out = self._emit_all(checked, decisions, records, now)  # type: ignore[arg-type]
        else:
            out = self._interleave(checked, valid, decisions, records, now)
        for pool, count in self._routed.items():
            routed_to(pool).inc(count)
        return out

    def _interleave(
        self,
        checked: list[Item | Rejection],
        valid: list[int],
        decisions: list[Decision],
        records: list[tuple[bytes | None, Source]],
        now: datetime,
    ) -> list[Outgoing]:
        """Routed items' outputs and dead letters, in input order."""
        out: list[Outgoing | None] = [None] * len(records)
        emitted = self._emit_all([checked[k] for k in valid], decisions, [records[k] for k in valid], now)  # type: ignore[misc]
        for k, outgoing in zip(valid, emitted, strict=False):
            out[k] = outgoing
        for k, item in enumerate(checked):
            if isinstance(item, Rejection):
                out[k] = self.output.dead_letter(item, *records[k])
        return out  # type: ignore[return-value]

    def _emit_all(
        self, items: list[Item], decisions: list[Decision], records: list[tuple[bytes, Source]], now: datetime
    ) -> list[Outgoing]:
        """The routed items' outputs; with budgets or shadow sampling configured, item by item (_emit)."""
        if self.decider.per_item:
            return [
                self._emit(item, d, *record, now)
                for item, d, record in zip(items, decisions, records, strict=False)
            ]
        self._routed.update(d.pool for d in decisions)
        if self.admission.routed is not None:
            self.admission.routed.add_many([item.job_id for item in items], [record[1] for record in records])
        return self.output.assignments(items, decisions, records, now)

    def _emit(self, item: Item, decision: Decision, raw: bytes, source: Source, now: datetime) -> Outgoing:
        """Over budget: a dead letter, a parked item or a downgraded assignment; else the assignment, with a
        shadow copy when sampled."""
        settled = self.decider.settle(item, decision, now)
        if isinstance(settled, Rejection):
            return self.output.dead_letter(settled, raw, source)
        if isinstance(settled, Deferral):
            self.admission.forget(item.job_id)
            return self.output.deferred(item, raw)
        self._routed[settled.pool] += 1
        if self.admission.routed is not None:
            self.admission.routed.add(item.job_id, source.partition, source.offset)
        if settled.pool != decision.pool:  # downgraded
            return self.output.assignment(item, raw, settled, now)
        shadow = self.decider.shadowed(item, settled)
        copy = self.output.shadow_copy(item, shadow, now) if shadow is not None else None
        return self.output.assignment(item, raw, settled, now, copy)
