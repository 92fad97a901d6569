"""Analysts while the sink writes: the sink's read-only query server against opening the chdb engine directly.

One process, one chdb engine (as in the sink): a writer thread inserts result and cost rows in batches the way
the sink does (`write_ledger`), while an analyst runs the demo's cost-by-pool query (FINAL join of results and
cost_ledger) either through the query server with clickhouse-connect's http:// client, or in process on the
engine (what `modelyard costs` does while no sink runs). Prints query latency each way, the writer's rows/s
alone and under a continuous analyst, and how soon a written batch is visible over HTTP. Usage:

    .venv/bin/python benchmarks/analyst_queries.py --rows 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.core.settings import load_settings
from modelyard.local.demo import COST_BY_POOL
from schemas import Result
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import PriceCatalog
from workers.sink.query_server import QueryServer, chdb_path

BATCH = 2000


def results(prefix: str, count: int) -> list[Result]:
    now = datetime.now(UTC)
    return [
        Result(
            job_id=f"{prefix}-{n}",
            attempt=1,
            tenant=("acme", "globex", "initech")[n % 3],
            task_type="classification",
            pool=("slm", "frontier")[n % 2],
            provider=("vllm", "anthropic")[n % 2],
            model=("HuggingFaceTB/SmolLM2-135M-Instruct", "claude-sonnet-5")[n % 2],
            status="ok",
            output="billing",
            usage={"input_tokens": 120, "output_tokens": 3},
            latency_ms=20.0,
            completed_at=now,
        )
        for n in range(count)
    ]


class Writer(threading.Thread):
    """Inserts batches until stopped; counts rows and remembers when each batch returned."""

    def __init__(self, store: ClickHouseStore, catalog: PriceCatalog, prefix: str) -> None:
        super().__init__(daemon=True)
        self.store, self.catalog, self.prefix = store, catalog, prefix
        self.rows, self.stop, self.batches = 0, threading.Event(), 0

    def run(self) -> None:
        while not self.stop.is_set():
            batch = results(f"{self.prefix}-{self.batches}", BATCH)
            self.store.write_ledger(LedgerTables(batch, self.catalog.price(batch)))
            self.rows += BATCH
            self.batches += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latencies(run, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def writer_rate(
    store: ClickHouseStore, catalog: PriceCatalog, prefix: str, seconds: float, analyst=None
) -> float:
    writer = Writer(store, catalog, prefix)
    stop = threading.Event()

    def query_nonstop() -> None:
        while not stop.is_set():
            analyst()

    reader = threading.Thread(target=query_nonstop, daemon=True)
    writer.start()
    if analyst is not None:
        reader.start()
    time.sleep(seconds)
    writer.stop.set()
    stop.set()
    writer.join()
    if analyst is not None:
        reader.join()
    return writer.rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the tables before measuring")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each writer run")
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    console = Console()
    data = tempfile.mkdtemp(prefix="analysts-")
    settings = load_settings(clickhouse={"dsn": f"chdb://{data}", "query_port": free_port()}).clickhouse
    store = ClickHouseStore(settings)
    store.migrate()
    catalog = PriceCatalog.load(None, "claude-sonnet-5")
    with console.status(f"writing {args.rows:,} rows..."):
        for start in range(0, args.rows, 10_000):
            batch = results(f"seed-{start}", min(10_000, args.rows - start))
            store.write_ledger(LedgerTables(batch, catalog.price(batch)))

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = QueryServer(settings, chdb_path(settings))  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(server.start(), loop).result()
    http = clickhouse_connect.get_client(host=settings.query_host, port=settings.query_port, interface="http")
    prefix = {"prefix": "seed"}

    direct = latencies(lambda: store.query(COST_BY_POOL, prefix), args.queries)
    served = latencies(lambda: http.query(COST_BY_POOL, parameters=prefix).result_rows, args.queries)
    count_direct = latencies(lambda: store.query("SELECT count() FROM results"), args.queries)
    count_served = latencies(lambda: http.query("SELECT count() FROM results").result_rows, args.queries)

    alone = writer_rate(store, catalog, "alone", args.seconds)
    http_reader = clickhouse_connect.get_client(
        host=settings.query_host, port=settings.query_port, interface="http"
    )
    busy = writer_rate(
        store, catalog, "busy", args.seconds, lambda: http_reader.query(COST_BY_POOL, parameters=prefix)
    )

    seen = []
    for n in range(10):
        batch = results(f"seen-{n}", BATCH)
        store.write_ledger(LedgerTables(batch, catalog.price(batch)))
        written = time.perf_counter()
        while (
            http.query(
                "SELECT count() FROM results WHERE startsWith(job_id, {p:String})",
                parameters={"p": f"seen-{n}-"},
            ).result_rows[0][0]
            != BATCH
        ):
            pass
        seen.append((time.perf_counter() - written) * 1000)

    table = Table(
        "measure",
        "in process (sink stopped)",
        "query server, http:// (sink running)",
        title=f"analyst queries on {args.rows:,} rows, one chdb engine",
    )
    table.add_row("cost by pool (FINAL join) p50 / p95 ms", _p(direct), _p(served))
    table.add_row("count() p50 / p95 ms", _p(count_direct), _p(count_served))
    table.add_row("writer rows/s alone", f"{alone:,.0f}", "")
    table.add_row("writer rows/s, an analyst querying nonstop", "", f"{busy:,.0f} ({busy / alone:.2f}x)")
    table.add_row(
        "a written batch visible over HTTP after, ms (median of 10)", "", f"{statistics.median(seen):.1f}"
    )
    console.print(table)
    http.close()
    http_reader.close()
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result()
    store.close()


def _p(values: list[float]) -> str:
    return f"{values[len(values) // 2]:.1f} / {values[int(len(values) * 0.95) - 1]:.1f}"


if __name__ == "__main__":
    main()
