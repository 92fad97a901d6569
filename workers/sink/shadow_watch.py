"""ShadowAgreementWatch: the sink's view of v_shadow_agreement, exported as Prometheus gauges per task.

`modelyard_shadow_agreement{task}` is the pairs-weighted agreement over the last `shadow_alert.window_days`
days, `modelyard_shadow_pairs{task}` how many pairs it rests on, and `modelyard_shadow_agreement_low{task}` is
1 while agreement is below `shadow_alert.threshold` on at least `min_pairs` pairs (else 0): the alert rules in
infra/prometheus/alerts.yaml fire on it. The sink refreshes it after a write, at most every `interval_s`, in
the thread that writes (chdb serves one caller at a time), so it costs one small query a minute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from modelyard.core._exceptions import StorageError
from modelyard.core.observability import SHADOW_AGREEMENT, SHADOW_AGREEMENT_LOW, SHADOW_PAIRS
from modelyard.core.settings import ShadowAlertSettings
from workers.sink.clickhouse import ClickHouseStore

log = logging.getLogger("modelyard.sink")
AGREEMENT_SQL = """
SELECT task_type, sum(pairs), sum(agreement * pairs) / sum(pairs) FROM v_shadow_agreement
WHERE day >= today() - {days:UInt32} GROUP BY task_type
"""


@dataclass(frozen=True)
class TaskAgreement:
    task: str
    pairs: int
    agreement: float
    low: bool


class ShadowAgreementWatch:
    def __init__(self, store: ClickHouseStore, settings: ShadowAlertSettings) -> None:
        self.store = store
        self.settings = settings
        self.refreshed_at = float("-inf")
        self.reported: set[str] = set()

    def due(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) - self.refreshed_at >= self.settings.interval_s

    def refresh(self) -> list[TaskAgreement]:
        """Read the view and set the gauges; a failed query leaves them as they were (logged)."""
        self.refreshed_at = time.monotonic()
        try:
            rows = self.store.query(AGREEMENT_SQL, {"days": self.settings.window_days - 1})
        except StorageError as exc:
            log.warning("shadow agreement not refreshed: %s", exc)
            return []
        found = [self._judge(task, int(pairs), float(agreement)) for task, pairs, agreement in rows]
        for task in self.reported - {f.task for f in found}:  # no pairs in the window any more: no verdict
            SHADOW_AGREEMENT.remove(task)
            SHADOW_PAIRS.labels(task).set(0)
            SHADOW_AGREEMENT_LOW.labels(task).set(0)
        self.reported = {f.task for f in found}
        for f in found:
            SHADOW_AGREEMENT.labels(f.task).set(f.agreement)
            SHADOW_PAIRS.labels(f.task).set(f.pairs)
            SHADOW_AGREEMENT_LOW.labels(f.task).set(int(f.low))
            if f.low:
                log.warning(
                    "shadow agreement for %s is %.3f over %d pairs, below %.2f",
                    f.task,
                    f.agreement,
                    f.pairs,
                    self.settings.threshold,
                )
        return found

    def _judge(self, task: str, pairs: int, agreement: float) -> TaskAgreement:
        low = pairs >= self.settings.min_pairs and agreement < self.settings.threshold
        return TaskAgreement(task, pairs, agreement, low)
