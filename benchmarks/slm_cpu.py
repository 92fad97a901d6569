"""Requests/s of the SLM pool's backend against the vLLM CPU server, at a few concurrencies.

Classification with vLLM's structured_outputs choice and logprobs, exactly as the pool sends it, through
the real openai SDK. Start the server first (`modelyard slm serve`); MODELYARD_SLM_SERVER__* pick it.

    .venv/bin/python benchmarks/slm_cpu.py                      # 1, 4, 16 in flight, 48 requests each
    .venv/bin/python benchmarks/slm_cpu.py --inflight 1 8 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelyard.app import build_backend
from modelyard.core.settings import Settings, load_settings
from modelyard.local.demo import sample_lines
from schemas import TaskType, WorkItem
from schemas.decoding import decode


def classification_items(count: int) -> list[WorkItem]:
    decoded = (decode(WorkItem, raw) for _, raw in sample_lines("bench"))
    items = [i for i in decoded if isinstance(i, WorkItem) and i.task is TaskType.CLASSIFICATION]
    return [items[n % len(items)] for n in range(count)]


async def measure(settings: Settings, in_flight: int, items: list[WorkItem]) -> tuple[float, int, int]:
    """(wall seconds, input tokens, output tokens) for `items` with `in_flight` calls at a time."""
    backend, queue = build_backend(settings, "slm"), list(items)
    tokens = [0, 0]

    async def caller() -> None:
        while queue:
            done = await backend.complete(queue.pop(), TaskType.CLASSIFICATION)
            tokens[0] += done.usage.input_tokens
            tokens[1] += done.usage.output_tokens

    await backend.complete(items[0], TaskType.CLASSIFICATION)  # warm the connection and the grammar cache
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    wall = time.perf_counter() - started
    await backend.close()
    return wall, tokens[0], tokens[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflight", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48)
    args = parser.parse_args()
    settings = load_settings()
    settings = load_settings(providers={"vllm": {"base_url": settings.slm_server.url}})
    table = Table("in flight", "requests", "req/s", "ms/request", "input tok/s", "output tok/s")
    for in_flight in args.inflight:
        wall, tokens_in, tokens_out = asyncio.run(
            measure(settings, in_flight, classification_items(args.requests))
        )
        n = args.requests
        table.add_row(
            str(in_flight),
            str(n),
            f"{n / wall:.1f}",
            f"{1000 * wall / n * in_flight:.0f}",
            f"{tokens_in / wall:.0f}",
            f"{tokens_out / wall:.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
