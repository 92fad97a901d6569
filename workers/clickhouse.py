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
from clickhouse_connect.driver.exceptions import ClickHouseError

from modelyard._exceptions import StorageError
from modelyard.settings import ClickHouseSettings
from schemas import Assignment, Result, TaskType
from schemas.migrations import load_migrations
from schemas.evaluation import EvalScore
from schemas.spend import SpendRecord
from workers.pricing import Cost

QUERY_HINT = "check the SQL against the tables listed in the README (modelyard sql 'SHOW TABLES')"
RESULT_COLUMNS = (
    "job_id", "attempt", "tenant", "task_type", "pool", "provider", "model", "status", "output", "confidence",
    "error", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "latency_ms", "batch", "completed_at",
)
COST_COLUMNS = (
    "job_id", "attempt", "tenant", "task_type", "pool", "provider", "model", "input_tokens", "cached_input_tokens",
    "cache_write_tokens", "output_tokens", "reasoning_tokens", "input_cost_usd", "cached_input_cost_usd",
    "cache_write_cost_usd", "output_cost_usd", "reasoning_cost_usd", "total_cost_usd", "catalog_version", "batch",
    "self_hosted", "reference_model", "reference_cost_usd", "savings_usd", "completed_at",
)


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
            self.client = clickhouse_connect.get_client(dsn=self.dsn, password=password, database=settings.database)
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
        self, results: Sequence[Result], costs: Sequence[Cost], decisions: Sequence[Assignment] = (),
        capture_tasks: Collection[TaskType] = (),
    ) -> None:
        """Insert results, their cost rows and routing decisions, skipping (job_id, attempt) keys already stored;
        and the inputs of new first-attempt decisions whose task is in `capture_tasks` (training data).

        The skip keeps replays out of the raw tables (and so out of the daily rollup view); the tables'
        ReplacingMergeTree engine is the backstop when two sinks race during a rebalance."""
        by_key = {(r.job_id, r.attempt): (r, c) for r, c in zip(results, costs, strict=True)}
        fresh = self.unseen("results", list(by_key))
        self.insert("results", [_result_row(r) for k, (r, _) in by_key.items() if k in fresh], RESULT_COLUMNS)
        # A cost row is written only after its result row, so when no result of the batch was stored before,
        # no cost row can be either; otherwise (a replay, a retry after a partial write) check the ledger too.
        unpriced = set(by_key) if len(fresh) == len(by_key) else self.unseen("cost_ledger", list(by_key))
        self.insert("cost_ledger", [_cost_row(r, c) for k, (r, c) in by_key.items() if k in unpriced], COST_COLUMNS)
        decided = {(a.item.job_id, a.attempt): a for a in decisions}
        new_decisions = self.unseen("routing_decisions", list(decided))
        self.insert("routing_decisions", [_decision_row(a) for k, a in decided.items() if k in new_decisions], DECISION_COLUMNS)
        captured = [a for k, a in decided.items() if k in new_decisions and a.attempt == 1 and a.task_type in capture_tasks]
        self.insert("job_inputs", [_input_row(a) for a in captured], INPUT_COLUMNS)

    def write_evals(self, scores: Sequence[EvalScore]) -> None:
        rows = [
            (s.run, s.case_id, s.job_id, s.pool, s.provider, s.model, s.task_type.value, s.status, int(s.correct),
             s.score, s.confidence, Decimal(s.cost_usd), s.latency_ms, s.scored_at)
            for s in scores
        ]
        self.insert("eval_results", rows, EVAL_COLUMNS)

    def unseen(self, table: str, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """The keys not yet stored in `table` (keyed by job_id, attempt)."""
        if not keys:
            return set()
        job_ids = sorted({job_id for job_id, _ in keys})
        stored = self.query(
            f"SELECT job_id, attempt FROM {table} WHERE job_id IN {{ids:Array(String)}}", {"ids": job_ids}
        )
        return set(keys) - {(job_id, int(attempt)) for job_id, attempt in stored}

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

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self.client.query(sql, parameters=parameters).result_rows
        except (ClickHouseError, OSError) as exc:
            raise StorageError(f"query failed: {str(exc)[:300]}", hint=QUERY_HINT) from exc

    def query_with_names(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
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
    "run", "case_id", "job_id", "pool", "provider", "model", "task_type", "status", "correct", "score", "confidence",
    "cost_usd", "latency_ms", "scored_at",
)
INPUT_COLUMNS = ("job_id", "tenant", "task_type", "input_text", "labels", "routed_at")
REGISTRY_COLUMNS = ("task", "version", "trained_on", "heldout_examples", "heldout_agreement", "target", "registered_at", "path")
DECISION_COLUMNS = (
    "job_id", "attempt", "tenant", "task_type", "task_reason", "pool", "rule", "reason", "novelty_score",
    "input_tokens_est", "priority", "routed_at",
)


def _result_row(r: Result) -> tuple[Any, ...]:
    u = r.usage
    return (
        r.job_id, r.attempt, r.tenant, r.task_type.value, r.pool, r.provider, r.model, r.status.value, r.output or "",
        r.confidence, r.error, u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens,
        u.reasoning_tokens, r.latency_ms, int(r.batch), r.completed_at,
    )


def _cost_row(r: Result, c: Cost) -> tuple[Any, ...]:
    u = r.usage
    return (
        r.job_id, r.attempt, r.tenant, r.task_type.value, r.pool, r.provider, r.model, u.input_tokens,
        u.cached_input_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens, c.input_usd,
        c.cached_input_usd, c.cache_write_usd, c.output_usd, c.reasoning_usd, c.total_usd, c.catalog_version,
        int(r.batch), int(c.self_hosted), c.reference_model, c.reference_usd, c.savings_usd, r.completed_at,
    )


def _decision_row(a: Assignment) -> tuple[Any, ...]:
    return (
        a.item.job_id, a.attempt, a.item.tenant, a.task_type.value, a.task_reason, a.pool, a.rule, a.reason,
        a.novelty_score, a.input_tokens_est, a.item.priority, a.routed_at,
    )


def _input_row(a: Assignment) -> tuple[Any, ...]:
    item = a.item
    return (item.job_id, item.tenant, a.task_type.value, item.input_text(), list(item.params.labels or []), a.routed_at)


def _redacted(dsn: str) -> str:
    """A DSN without its password, for messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
