"""Which rows of a batch go into `results` and which into `cost_ledger`: one result per attempt and one final
result per job, one ledger row per real provider call.

Every Result carries the call id its pool made when it sent the call. So:

* a replayed Result message (a pool or sink replay after a crash) repeats its call id: it adds no row;
* a second real call for the same (job_id, attempt), made when a pool redelivers an assignment it had
  answered before it crashed, or for a reused job id, has a call id of its own: its ledger row is added and
  billed, flagged `repeat_call = 1`;
* `results` keeps the first result stored for each (job_id, attempt), and nothing for a job after its final
  result (ok, error): a redelivered chain that took another path (a breaker changed state) cannot give a job
  a second final result. The ledger row whose result is the kept one has `repeat_call = 0`.

Rows are taken in batch order, which is Kafka's order within a job (results are keyed by job_id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

CallKey = tuple[str, int, str]  # job_id, attempt, call_id


@dataclass(frozen=True)
class StoredCalls:
    """What the tables already hold for a batch's job ids."""

    results: dict[tuple[str, int], str] = field(default_factory=dict)  # (job, attempt) -> kept call id
    final_jobs: set[str] = field(default_factory=set)  # jobs whose final result is stored
    calls: set[CallKey] = field(default_factory=set)  # calls in the ledger

    def __bool__(self) -> bool:
        return bool(self.results or self.calls)


@dataclass(frozen=True)
class RowPlan:
    results: list[int] | None  # batch positions to insert into results (None: every row)
    costs: list[int] | None  # batch positions to insert into cost_ledger (None: every row)
    repeat: list[int]  # per batch row: 1 when the row is a call whose result is not the one kept

    def repeats(self) -> list[int]:
        """Positions of the repeat calls inserted."""
        inserted = range(len(self.repeat)) if self.costs is None else self.costs
        return [row for row in inserted if self.repeat[row]]


def plan_rows(keys: Sequence[CallKey], finals: Sequence[bool], stored: StoredCalls) -> RowPlan:
    """The rows each table takes; `finals[i]`: row i's status ends its job (ok, error)."""
    rows = len(keys)
    if not stored and len({(job, attempt) for job, attempt, _ in keys}) == rows:
        return RowPlan(None, None, [0] * rows)  # the usual batch: new attempts, each once
    kept, final_jobs, calls = dict(stored.results), set(stored.final_jobs), set(stored.calls)
    results, costs, repeat = [], [], [0] * rows
    for row, (job, attempt, call) in enumerate(keys):
        if (job, attempt) not in kept and job not in final_jobs:
            kept[job, attempt] = call
            results.append(row)
            if finals[row]:
                final_jobs.add(job)
        if (job, attempt, call) in calls:
            continue  # this call is billed already: a replay
        calls.add((job, attempt, call))
        costs.append(row)
        repeat[row] = int(kept.get((job, attempt)) != call)
    return RowPlan(None if len(results) == rows else results, None if len(costs) == rows else costs, repeat)
