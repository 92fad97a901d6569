"""QueryServer: ClickHouse's HTTP interface, read-only, over the sink's own chdb engine.

chdb runs one engine per process and one process per data path, so while the sink writes, no other process
can open its tables. The sink therefore answers analysts itself: `GET|POST /?query=...` (or the SQL as the
body, or a form field), `param_<name>` bind parameters, `database`, `default_format`, and any other URL
parameter as a ClickHouse setting, exactly as a ClickHouse server's HTTP port would. clickhouse-connect's
`http://` client (and so `modelyard costs`, `modelyard sql`) and Grafana's ClickHouse datasource work
unchanged, and see each batch as soon as the sink wrote it.

Every request gets its own chdb connection (a session of the one engine: ~0.5 ms), which applies the
request's settings, then `readonly = 1` (no writes, no DDL, no table functions such as file() or url(), no
further settings), runs the statement in the requested format, and closes. Sessions (`session_id`) are not
kept: each request stands alone. The server binds 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import chdb
from aiohttp import web

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import ClickHouseSettings

log = logging.getLogger("modelyard.sink.queries")

PATH_HEADER = "X-Modelyard-Data-Path"
QUERY_THREADS = 4
# URL parameters the HTTP layer consumes; everything else (bar param_*) is a setting of the query.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "cancel_http_readonly_queries_on_client_close",
        "role",
    }
)
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
ERROR_CODE = re.compile(r"Code: (\d+)")
HTTP_STATUS = {48: 501, 62: 400, 115: 400, 47: 400, 46: 400, 60: 404, 81: 404, 164: 403, 497: 403}


@dataclass
class QueryRequest:
    sql: str
    database: str | None = None
    default_format: str = "TabSeparated"
    params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    query_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    http_compression: bool = False  # enable_http_compression=1: gzip/deflate as Accept-Encoding allows

    @property
    def format(self) -> str:
        """The statement's own FORMAT clause wins over default_format, as on a ClickHouse server."""
        match = TRAILING_FORMAT.search(self.sql)
        return match.group(1) if match else self.default_format


@dataclass
class QueryAnswer:
    body: bytes
    format: str
    summary: dict[str, str]


class QueryError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        found = ERROR_CODE.search(message)
        self.code = int(found.group(1)) if found else 0

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


class ReadOnlyEngine:
    """Runs one request on a fresh connection to the process's chdb engine, read-only."""

    def __init__(self, data_path: str) -> None:
        self.data_path = data_path
        self.output_formats = self._output_formats()

    def _output_formats(self) -> frozenset[str]:
        rows = self._run(QueryRequest("SELECT name FROM system.formats WHERE is_output"))
        return frozenset(rows.body.decode().split())

    def timezone(self) -> str:
        return self._run(QueryRequest("SELECT timezone()")).body.decode().strip()

    def run(self, request: QueryRequest) -> QueryAnswer:
        fmt = request.format
        if fmt not in self.output_formats:
            raise QueryError(f"Code: 73. DB::Exception: Unknown output format {fmt}. (UNKNOWN_FORMAT)")
        return self._run(request)

    def _run(self, request: QueryRequest) -> QueryAnswer:
        connection = chdb.connect(self.data_path)
        try:
            if request.database:
                self._execute(connection, f"USE {_identifier(request.database)}")
            for name, value in request.settings.items():
                self._execute(connection, f"SET {name} = {_literal(value)}")
            self._execute(connection, "SET readonly = 1")
            result = self._execute(connection, request.sql, request.format, request.params)
        finally:
            connection.close()
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
        return QueryAnswer(result.bytes() or b"", request.format, summary)

    @staticmethod
    def _execute(connection, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None):
        try:
            return connection.query(sql, fmt, params=params or {})
        except Exception as exc:  # chdb raises RuntimeError and its own ChdbError with the engine's text
            raise QueryError(str(exc)) from exc


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def parse_request(request: web.Request) -> QueryRequest:
    """SQL from the `query` parameter, then the body (or a form's `query` field); the rest as ClickHouse reads
    them: param_<name> binds, database, default_format, settings."""
    values = dict(request.query)
    body = ""
    if request.method == "POST":
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.post()
            values.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            body = (await request.read()).decode("utf-8", errors="replace")
    sql = "\n".join(part for part in (values.get("query", ""), body) if part.strip())
    for name in ("compress", "decompress"):
        if values.get(name) == "1":
            raise QueryError(
                f"Code: 48. DB::Exception: {name}=1 (ClickHouse's block compression) is not served here; "
                "use HTTP compression (enable_http_compression=1 with Accept-Encoding: gzip). (NOT_IMPLEMENTED)"
            )
    settings = {}
    for name, value in values.items():
        if name in TRANSPORT_PARAMS or name.startswith(("param_", "http_")):
            continue
        if not SETTING_NAME.fullmatch(name):
            raise QueryError(f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
        settings[name] = value
    return QueryRequest(
        sql=sql,
        database=values.get("database") or request.headers.get("X-ClickHouse-Database"),
        default_format=values.get("default_format")
        or request.headers.get("X-ClickHouse-Format")
        or "TabSeparated",
        params={k.removeprefix("param_"): v for k, v in values.items() if k.startswith("param_")},
        settings=settings,
        query_id=values.get("query_id") or str(uuid.uuid4()),
        http_compression=values.get("enable_http_compression") == "1",
    )


CONTENT_TYPES = (
    ("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
    ("TSV", "text/tab-separated-values; charset=UTF-8"),
    ("CSV", "text/csv; charset=UTF-8"),
    ("JSON", "application/json; charset=UTF-8"),
    ("Pretty", "text/plain; charset=UTF-8"),
)


def content_type(fmt: str) -> str:
    return next(
        (kind for prefix, kind in CONTENT_TYPES if fmt.startswith(prefix)), "application/octet-stream"
    )


class QueryServer:
    """The HTTP side: /ping, and queries answered by ReadOnlyEngine in a small thread pool of their own, so
    long analyst queries never take the threads the sink writes with."""

    def __init__(self, settings: ClickHouseSettings, data_path: str) -> None:
        self.settings = settings
        self.data_path = data_path
        self.engine = ReadOnlyEngine(data_path)
        self.timezone = self.engine.timezone()
        self.threads = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="query")
        self._runner: web.AppRunner | None = None
        self.answered = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/ping", self._ping)
        app.router.add_route("GET", "/", self._query)
        app.router.add_route("POST", "/", self._query)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        host, port = self.settings.query_host, self.settings.query_port
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(
                f"cannot serve queries on {host}:{port}: {exc.strerror}",
                hint="set MODELYARD_CLICKHOUSE__QUERY_PORT to a free port, or 0 to turn the query server off",
            ) from exc
        log.info("read-only ClickHouse HTTP interface on http://%s:%d (chdb %s)", host, port, self.data_path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.threads.shutdown(wait=False, cancel_futures=True)

    def _headers(self) -> dict[str, str]:
        return {
            PATH_HEADER: self.data_path,
            "X-ClickHouse-Server-Display-Name": "modelyard-sink",
            "X-ClickHouse-Timezone": self.timezone,
        }

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n", headers=self._headers())

    async def _query(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            query = await parse_request(request)
            if not query.sql.strip():
                return web.Response(text="Ok.\n", headers=self._headers())
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self.threads, self.engine.run, query)
        except QueryError as exc:
            log.info("query refused (code %d): %s", exc.code, str(exc)[:200])
            headers = {**self._headers(), "X-ClickHouse-Exception-Code": str(exc.code)}
            return web.Response(status=exc.status, text=f"{exc}\n", headers=headers)
        self.answered += 1
        log.debug("query %s answered in %.1f ms", query.query_id, (time.perf_counter() - started) * 1000)
        headers = {
            **self._headers(),
            "X-ClickHouse-Format": answer.format,
            "X-ClickHouse-Query-Id": query.query_id,
            "X-ClickHouse-Summary": json.dumps(answer.summary),
            "Content-Type": content_type(answer.format),
        }
        response = web.Response(body=answer.body, headers=headers)
        if query.http_compression:
            response.enable_compression()  # picks gzip or deflate from the request's Accept-Encoding
        return response


def chdb_path(settings: ClickHouseSettings) -> str | None:
    """The real path of a chdb:// DSN (as clickhouse-connect names the engine); None for a server DSN."""
    if not settings.dsn.startswith("chdb://"):
        return None
    return os.path.realpath(Path(settings.dsn.removeprefix("chdb://")))


async def start_query_server(settings: ClickHouseSettings) -> QueryServer | None:
    """The server, started, when the DSN is chdb:// and query_port is set; None otherwise."""
    path = chdb_path(settings)
    if path is None or not settings.query_port:
        return None
    server = QueryServer(settings, path)
    await server.start()
    return server
