"""The ClickHouse an analyst command reads: the configured server, or for chdb:// the sink's query server
while the sink runs (its engine holds the path), or the chdb path itself while no sink does."""

from __future__ import annotations

import urllib.error
import urllib.request

from modelyard.core._exceptions import StorageError
from modelyard.core.settings import ClickHouseSettings
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.query_server import PATH_HEADER, chdb_path

LOCKED = ("Cannot lock file", "Another server instance")


def open_analyst_store(settings: ClickHouseSettings, write: bool = False) -> ClickHouseStore:
    """A store for an analyst command. Opened on the engine itself (a server, or a chdb path no sink holds), it
    is migrated first; through the sink's query server it is read-only (the sink migrated at its start), so a
    command that writes (`write`) never takes that way."""
    path = chdb_path(settings)
    if path is None:
        store = ClickHouseStore(settings)
        store.migrate()
        return store
    if not write and settings.query_port and serves_path(settings, path):
        return ClickHouseStore(settings.model_copy(update={"dsn": settings.query_url}))
    return _open_engine(settings, path, write)


def serves_path(settings: ClickHouseSettings, path: str) -> bool:
    """True when the sink's query server answers on its port for this very chdb path."""
    try:
        with urllib.request.urlopen(f"{settings.query_url}/ping", timeout=2) as response:
            served = response.headers.get(PATH_HEADER)
    except (urllib.error.URLError, OSError):
        return False
    if served is not None and served != path:
        raise StorageError(
            f"the sink answering on {settings.query_url} serves chdb path {served}, not {path}",
            hint="point MODELYARD_CLICKHOUSE__DSN at the same path as the sink, or its query port elsewhere",
        )
    return served == path


def _open_engine(settings: ClickHouseSettings, path: str, write: bool) -> ClickHouseStore:
    try:
        store = ClickHouseStore(settings)
    except StorageError as exc:
        if write and any(marker in str(exc) for marker in LOCKED):
            raise StorageError(
                f"this command writes to ClickHouse, and the chdb path {path} is held by a running sink "
                "(its query server answers reads only)",
                hint="stop the sink (`modelyard down`) and run it again, or use a ClickHouse server DSN",
            ) from exc
        if any(marker in str(exc) for marker in LOCKED):
            raise StorageError(
                f"the chdb path {path} is held by another process (a running sink) that does not answer "
                f"queries on {settings.query_url}",
                hint="start the sink with its query server (MODELYARD_CLICKHOUSE__QUERY_PORT, default 8124) "
                "and run this again while it runs, or stop the sink (`modelyard down`)",
            ) from exc
        raise
    store.migrate()
    return store
