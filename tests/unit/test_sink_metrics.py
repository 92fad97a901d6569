"""The sink's batch metrics: summed per label set, they equal counting every row one by one."""

from collections import Counter
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from schemas import Result
from workers.sink.ledger_tables import LedgerTables
from workers.sink.pricing import UNITS_PER_USD, PriceCatalog
from workers.sink.sink import count_written

MODELS = [
    ("metrics-slm", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("metrics-frontier", "claude-sonnet-5"),
    ("metrics-frontier", "gpt-5"),
]


def result(n: int) -> Result:
    pool, model = MODELS[n % 3]
    return Result(
        job_id=f"m-{n}",
        attempt=1,
        tenant="t",
        task_type="other",
        pool=pool,
        provider="x",
        model=model,
        status=("ok", "error", "escalated")[n % 2 + (n % 5 == 0)],
        latency_ms=1.0,
        completed_at=datetime(2026, 5, 1, tzinfo=UTC),
        usage={
            "input_tokens": 100 + n,
            "cached_input_tokens": n % 4,
            "output_tokens": 7 * (n % 3),
            "cache_write_tokens": 0,
        },
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_batch_metrics_equal_per_row_counts() -> None:
    rows = [result(n) for n in range(60)]
    costs = PriceCatalog.load(reference_model="claude-sonnet-5").price(rows)
    outcomes = Counter((r.pool, r.status.value) for r in rows)
    tokens: Counter[tuple[str, str, str]] = Counter()
    usd: Counter[tuple[str, str]] = Counter()
    for r, total in zip(rows, costs.total, strict=True):
        for kind in ("input", "cached_input", "cache_write", "output"):
            tokens[r.pool, r.model, kind] += getattr(r.usage, f"{kind}_tokens")
        usd[r.pool, r.model] += total
    before = {
        labels: sample("modelyard_sink_results_total", pool=labels[0], status=labels[1])
        for labels in outcomes
    }
    before_tokens = {k: sample("modelyard_tokens_total", pool=k[0], model=k[1], kind=k[2]) for k in tokens}
    before_usd = {k: sample("modelyard_cost_usd_total", pool=k[0], model=k[1]) for k in usd}

    count_written(LedgerTables(rows, costs), decisions=0)

    assert {
        k: sample("modelyard_sink_results_total", pool=k[0], status=k[1]) - before[k] for k in outcomes
    } == dict(outcomes)
    assert {
        k: sample("modelyard_tokens_total", pool=k[0], model=k[1], kind=k[2]) - before_tokens[k]
        for k in tokens
    } == dict(tokens)
    for k, units in usd.items():
        assert (
            sample("modelyard_cost_usd_total", pool=k[0], model=k[1]) - before_usd[k] == units / UNITS_PER_USD
        )
    assert sample("modelyard_cost_usd_total", pool="metrics-frontier", model="gpt-5") > 0


def test_unpriced_results_are_counted_per_provider_and_model() -> None:
    rows = [result(n) for n in range(6)]
    rows[1] = rows[1].model_copy(update={"model": "nova-9-2026-11-30", "provider": "newco"})
    rows[4] = rows[4].model_copy(update={"model": "nova-9-2026-11-30", "provider": "newco"})
    costs = PriceCatalog.load(reference_model="claude-sonnet-5").price(rows)
    assert costs.priced == [1, 0, 1, 1, 0, 1]
    labels = {"provider": "newco", "model": "nova-9-2026-11-30"}
    before = sample("modelyard_unpriced_results_total", **labels)

    count_written(LedgerTables(rows, costs), decisions=0)

    assert sample("modelyard_unpriced_results_total", **labels) - before == 2
    assert sample("modelyard_unpriced_results_total", provider="x", model="gpt-5") == 0
