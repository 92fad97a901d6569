"""Every panel of the provisioned Grafana dashboard runs against the real schema (chDB, all migrations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelyard.core.settings import load_settings
from workers.sink.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration
INFRA = Path(__file__).resolve().parents[2] / "infra"
MACROS = {
    "$__fromTime": "toDateTime64('2026-01-01 00:00:00', 3)",
    "$__toTime": "toDateTime64('2030-01-01 00:00:00', 3)",
}


def panel_sql() -> list[tuple[str, str]]:
    dashboard = json.loads((INFRA / "grafana/dashboards/modelyard-costs.json").read_text())
    return [(p["title"], t["rawSql"]) for p in dashboard["panels"] for t in p["targets"]]


def test_every_panel_query_runs(tmp_path: Path) -> None:
    store = ClickHouseStore(load_settings(clickhouse={"dsn": f"chdb://{tmp_path}"}).clickhouse)
    try:
        store.migrate()
        for _title, sql in panel_sql():
            for macro, value in MACROS.items():
                sql = sql.replace(macro, value)
            store.query(sql)  # raises StorageError naming the problem if a panel is broken
    finally:
        store.close()
    assert len(panel_sql()) >= 6


def test_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasource = yaml.safe_load((INFRA / "grafana/provisioning/datasources/clickhouse.yaml").read_text())[
        "datasources"
    ][0]
    dashboard = json.loads((INFRA / "grafana/dashboards/modelyard-costs.json").read_text())
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {datasource["uid"]}
    compose = yaml.safe_load((INFRA.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("./infra/grafana/dashboards:") for m in mounts)
