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
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PricedColumns

# Inserts whose rows are unique by (job_id, attempt) already (unstored() keeps one row per key): ReplacingMergeTree
# need not run a replacing merge over each inserted block (measured ~0.8 µs/row for results + cost_ledger).
UNIQUE_KEYS = {"optimize_on_insert": 0}
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
        """Apply bundled migrations not yet recorded; returns the versions applied now."""
        self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        done = {row[0] for row in self.query("SELECT version FROM schema_migrations")}
        applied = []
        for migration in load_migrations():
            if migration.version in done:
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

    def write_ledger(self, tables: LedgerTables) -> None:
        """Insert results and their cost rows, one Arrow table each, skipping (job_id, attempt) keys already stored.

        The skip keeps replays out of the raw tables (and so out of the daily rollup view); the tables'
        ReplacingMergeTree engine is the backstop when two sinks race during a rebalance."""
        new_results, new_costs = self.unstored(tables)
        self.insert_arrow("results", tables.results, new_results, UNIQUE_KEYS)
        self.insert_arrow("cost_ledger", tables.cost_ledger, new_costs, UNIQUE_KEYS)

    def unstored(self, tables: LedgerTables) -> tuple[list[int] | None, list[int] | None]:
        """Positions of the rows whose result, and whose cost row, is not stored yet (None: every row).

        A key twice in the batch: its last row. A cost row is written only after its result row, so when no
        result of the batch was stored before, no cost row can be either; otherwise (a replay, a retry after a
        partial write) the ledger is checked too."""
        by_key = dict(
            zip(zip(tables.job_ids, tables.attempts, strict=False), range(len(tables)), strict=False)
        )
        in_results = self.stored("results", tables.job_ids) & by_key.keys()
        in_ledger = self.stored("cost_ledger", tables.job_ids) & by_key.keys() if in_results else set()
        return _positions(by_key, in_results, len(tables)), _positions(by_key, in_ledger, len(tables))

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
        if not job_ids:
            return set()
        # The job ids go in as one TSV string that the server parses (format(TSV)) into the IN set, which still
        # uses the primary key: quicker to parse than a JSON array or thousands of literals, and escaped in C
        # (str.replace) where a query parameter is escaped character by character in Python.
        ids = string_literal(tsv_lines(set(job_ids)))
        sql = f"SELECT job_id, attempt FROM {table} WHERE job_id IN (SELECT job_id FROM format(TSV, 'job_id String', {ids}))"
        size = len(sql.encode()) + 1024  # the server counts bytes; job ids may be any text
        return {
            (job_id, int(attempt))
            for job_id, attempt in self.query(sql, settings={"max_query_size": max(size, 262_144)})
        }

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
)


def _positions(
    by_key: dict[tuple[str, int], int], stored: set[tuple[str, int]], rows: int
) -> list[int] | None:
    """The row positions of the keys not stored, in order; None for every row."""
    if not stored and len(by_key) == rows:
        return None
    return [row for key, row in by_key.items() if key not in stored]


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
