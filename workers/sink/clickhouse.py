"""ClickHouseStore: the only door to ClickHouse, through clickhouse-connect (chdb:// embedded or http(s):// server).

chdb holds one engine per process and one process per data path, so exactly one long-running process
(the sink) opens a chdb path; analyst commands open it when the sink is stopped, or use a server DSN.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError

from modelyard.core._exceptions import StorageError
from modelyard.core.settings import ClickHouseSettings
from schemas import AnyResult, Assignment, TaskType
from schemas.evaluation import EvalScore
from schemas.migrations import load_migrations
from schemas.spend import SpendRecord
from workers.sink.call_rows import RowPlan, StoredCalls, plan_rows
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PricedColumns

# Inserts whose rows are unique by their table's key already (plan_rows keeps one row per key): ReplacingMergeTree
# need not run a replacing merge over each inserted block (measured ~0.8 µs/row for results + cost_ledger).
UNIQUE_KEYS = {"optimize_on_insert": 0}
FINAL_STATUSES = frozenset({"ok", "error"})  # a result with one of these ends its job
QUERY_HINT = "check the SQL against the tables listed in the README (modelyard sql 'SHOW TABLES')"


def resolve_dsn(dsn: str) -> str:
    """chdb:// paths are made absolute so every process names the same directory."""
    if not dsn.startswith("chdb://") or dsn.startswith("chdb:///"):
        return dsn
    path = Path(dsn.removeprefix("chdb://")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"chdb://{path}"


class ClickHouseStore:
    def __init__(self, settings: ClickHouseSettings) -> None:
        self.dsn = resolve_dsn(settings.dsn)
        password = settings.password.get_secret_value() if settings.password else ""
        try:
            self.client = clickhouse_connect.get_client(
                dsn=self.dsn, password=password, database=settings.database
            )
        except Exception as exc:  # clickhouse-connect raises several unrelated types at connect
            raise StorageError(f"cannot open ClickHouse at {_redacted(self.dsn)}: {str(exc)[:300]}") from exc

    def migrate(self) -> list[int]:
        """Apply bundled migrations not yet recorded; returns the versions applied now. A migration is known
        by its version and name, so two branches' files that took the same number both apply."""
        self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        done = {(row[0], row[1]) for row in self.query("SELECT version, name FROM schema_migrations")}
        applied = []
        for migration in load_migrations():
            if (migration.version, migration.name) in done:
                continue
            for statement in migration.statements:
                self.command(statement)
            self.insert("schema_migrations", [(migration.version, migration.name)], ("version", "name"))
            applied.append(migration.version)
        return applied

    def write_batch(
        self,
        results: Sequence[AnyResult],
        costs: PricedColumns,
        decisions: Sequence[Assignment] = (),
        capture_tasks: Collection[TaskType] = (),
    ) -> None:
        """Results with their cost rows (`costs` from `PriceCatalog.price(results)`, row for row), and routing
        decisions: `write_ledger` and `write_decisions` in one call."""
        self.write_ledger(LedgerTables(results, costs))
        self.write_decisions(decisions, capture_tasks)

    def write_ledger(self, tables: LedgerTables) -> RowPlan:
        """Insert results and their cost rows, one Arrow table each: a result per (job_id, attempt) and none
        after a job's final one, a cost row per provider call (job_id, attempt, call_id), a call whose result
        is not the one kept flagged `repeat_call` (workers/sink/call_rows.py).

        Replayed Results reach neither raw table (nor the daily rollup view); the tables' ReplacingMergeTree
        engine is the backstop when two sinks race during a rebalance."""
        plan = self.plan_ledger(tables)
        self.insert_arrow("results", tables.results, plan.results, UNIQUE_KEYS)
        self.insert_arrow("cost_ledger", tables.flag_repeats(plan.repeat), plan.costs, UNIQUE_KEYS)
        return plan

    def plan_ledger(self, tables: LedgerTables) -> RowPlan:
        """Which rows each table takes, given what is stored (the stored-key check)."""
        finals = [r.status in FINAL_STATUSES for r in tables.rows]
        keys = list(zip(tables.job_ids, tables.attempts, tables.call_ids, strict=True))
        return plan_rows(keys, finals, self.stored_calls(tables.job_ids))

    def stored_calls(self, job_ids: Collection[str]) -> StoredCalls:
        """What results and cost_ledger hold for these jobs. A cost row exists only for a job with a stored
        result (results are inserted first), so the ledger is asked only about those jobs."""
        results, final_jobs = {}, set()
        for job_id, attempt, call_id, final in self.rows_for_jobs(
            "job_id, attempt, call_id, status IN ('ok', 'error')", "results", job_ids
        ):
            results[job_id, int(attempt)] = call_id
            if final:
                final_jobs.add(job_id)
        if not results:
            return StoredCalls()
        stored_jobs = {job_id for job_id, _ in results}
        calls = {
            (job_id, int(attempt), call_id)
            for job_id, attempt, call_id in self.rows_for_jobs(
                "job_id, attempt, call_id", "cost_ledger", stored_jobs
            )
        }
        return StoredCalls(results, final_jobs, calls)

    def write_decisions(
        self, decisions: Sequence[Assignment], capture_tasks: Collection[TaskType] = ()
    ) -> None:
        """Routing decisions not stored yet, and the inputs of new first-attempt decisions whose task is in
        `capture_tasks` (training data)."""
        decided = {(a.item.job_id, a.attempt): a for a in decisions}
        new_decisions = self.unseen("routing_decisions", list(decided))
        self.insert(
            "routing_decisions",
            [_decision_row(a) for k, a in decided.items() if k in new_decisions],
            DECISION_COLUMNS,
        )
        captured = [
            a
            for k, a in decided.items()
            if k in new_decisions and a.attempt == 1 and a.task_type in capture_tasks
        ]
        self.insert("job_inputs", [_input_row(a) for a in captured], INPUT_COLUMNS)

    def write_evals(self, scores: Sequence[EvalScore]) -> None:
        rows = [
            (
                s.run,
                s.case_id,
                s.job_id,
                s.pool,
                s.provider,
                s.model,
                s.task_type.value,
                s.status,
                int(s.correct),
                s.score,
                s.confidence,
                Decimal(s.cost_usd),
                s.latency_ms,
                s.scored_at,
            )
            for s in scores
        ]
        self.insert("eval_results", rows, EVAL_COLUMNS)

    def unseen(self, table: str, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """The keys not yet stored in `table` (keyed by job_id, attempt)."""
        return set(keys) - self.stored(table, [job_id for job_id, _ in keys]) if keys else set()

    def stored(self, table: str, job_ids: Collection[str]) -> set[tuple[str, int]]:
        """The (job_id, attempt) keys `table` holds for these job ids."""
        return {
            (job_id, int(attempt))
            for job_id, attempt in self.rows_for_jobs("job_id, attempt", table, job_ids)
        }

    def rows_for_jobs(
        self, columns: str, table: str, job_ids: Collection[str], where: str = ""
    ) -> list[tuple[Any, ...]]:
        """`columns` of the rows of `table` (a FROM clause) whose job_id is one of these, and `where`."""
        if not job_ids:
            return []
        # The job ids go in as one TSV string that the server parses (format(TSV)) into the IN set, which still
        # uses the primary key: quicker to parse than a JSON array or thousands of literals, and escaped in C
        # (str.replace) where a query parameter is escaped character by character in Python.
        ids = string_literal(tsv_lines(set(job_ids)))
        sql = f"SELECT {columns} FROM {table} WHERE job_id IN (SELECT job_id FROM format(TSV, 'job_id String', {ids}))"
        sql += f" AND ({where})" if where else ""
        size = len(sql.encode()) + 1024  # the server counts bytes; job ids may be any text
        return self.query(sql, settings={"max_query_size": max(size, 262_144)})

    def spend(self, tenants: list[str], now: datetime) -> list[SpendRecord]:
        """Spend today and this month per tenant, from the daily rollup (replays never reach it)."""
        sql = (
            "SELECT tenant, sumIf(cost_usd, day = {today:Date}), sum(cost_usd) FROM cost_daily "
            "WHERE tenant IN {tenants:Array(String)} AND day >= {month_start:Date} GROUP BY tenant"
        )
        today = now.date()
        rows = self.query(sql, {"today": today, "tenants": tenants, "month_start": today.replace(day=1)})
        return [
            SpendRecord(tenant=t, day=today, day_usd=day_usd, month=f"{today:%Y-%m}", month_usd=month_usd)
            for t, day_usd, month_usd in rows
        ]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if not rows:
            return
        try:
            self.client.insert(table, rows, column_names=list(columns))
        except (ClickHouseError, OSError) as exc:
            raise StorageError(f"insert into {table} failed: {str(exc)[:300]}") from exc

    def insert_arrow(
        self,
        table: str,
        rows: pa.Table,
        positions: list[int] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert the rows of an Arrow table at `positions` (None: all of them, without copying)."""
        if not rows.num_rows or positions == []:
            return
        if positions is not None:
            rows = rows.take(positions)
        try:
            self.client.insert_arrow(table, rows, settings=settings)
        except (ClickHouseError, OSError) as exc:
            raise StorageError(f"insert into {table} failed: {str(exc)[:300]}") from exc

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        try:
            return self.client.query(sql, parameters=parameters, settings=settings).result_rows
        except (ClickHouseError, OSError) as exc:
            raise StorageError(f"query failed: {str(exc)[:300]}", hint=QUERY_HINT) from exc

    def query_with_names(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            result = self.client.query(sql, parameters=parameters)
        except (ClickHouseError, OSError) as exc:
            raise StorageError(f"query failed: {str(exc)[:300]}", hint=QUERY_HINT) from exc
        return list(result.column_names), result.result_rows

    def command(self, sql: str) -> None:
        try:
            self.client.command(sql)
        except (ClickHouseError, OSError) as exc:
            raise StorageError(f"command failed: {str(exc)[:300]}", hint=QUERY_HINT) from exc

    def close(self) -> None:
        self.client.close()


EVAL_COLUMNS = (
    "run",
    "case_id",
    "job_id",
    "pool",
    "provider",
    "model",
    "task_type",
    "status",
    "correct",
    "score",
    "confidence",
    "cost_usd",
    "latency_ms",
    "scored_at",
)
INPUT_COLUMNS = ("job_id", "tenant", "task_type", "input_text", "labels", "routed_at")
REGISTRY_COLUMNS = (
    "task",
    "version",
    "trained_on",
    "heldout_examples",
    "heldout_agreement",
    "target",
    "registered_at",
    "path",
)
DECISION_COLUMNS = (
    "job_id",
    "attempt",
    "tenant",
    "task_type",
    "task_reason",
    "pool",
    "rule",
    "reason",
    "novelty_score",
    "input_tokens_est",
    "priority",
    "routed_at",
    "reserved_usd",
)


def _decision_row(a: Assignment) -> tuple[Any, ...]:
    return (
        a.item.job_id,
        a.attempt,
        a.item.tenant,
        a.task_type.value,
        a.task_reason,
        a.pool,
        a.rule,
        a.reason,
        a.novelty_score,
        a.input_tokens_est,
        a.item.priority,
        a.routed_at,
        a.reserved_usd,
    )


def _input_row(a: Assignment) -> tuple[Any, ...]:
    item = a.item
    return (
        item.job_id,
        item.tenant,
        a.task_type.value,
        item.input_text(),
        list(item.params.labels or []),
        a.routed_at,
    )


TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def tsv_lines(values: Collection[str]) -> str:
    """One TSV line per value (each line ends in a newline), escaped only when some value needs it."""
    text = "\n".join(values) + "\n"
    if text.count("\n") != len(values) or any(c in text for c in "\\\t\r\0"):
        text = "".join(f"{v.translate(TSV_ESCAPES)}\n" for v in values)
    return text


def string_literal(text: str) -> str:
    """`text` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _redacted(dsn: str) -> str:
    """A DSN without its password, for messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
