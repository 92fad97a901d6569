"""Distillation on a real chDB engine with real training: frontier answers stored as the sink stores them,
a student trained and checked on a held-out slice, registered; the shadow alert gauges; the HTML report."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from modelyard.core.settings import Settings, load_settings
from modelyard.local.simulated_labels import SimulatedClassifier
from modelyard.ops.distill import Distiller, load_examples, split, write_proposal
from modelyard.ops.report import HtmlReport
from schemas import Assignment, Result, TaskType, WorkItem
from schemas.evaluation import EvalScore
from workers.pools.model_registry import ModelRegistry
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog
from workers.sink.shadow_watch import ShadowAgreementWatch

pytestmark = pytest.mark.integration
DATASET = Path(__file__).resolve().parents[2] / "modelyard" / "data" / "distill_jobs.jsonl"
SMALL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SIMULATED = SimulatedClassifier(frozenset({SMALL}), 0.7)
CATALOG = PriceCatalog.load(reference_model="claude-sonnet-5")
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("distill")
    return load_settings(state_dir=root / "state", clickhouse={"dsn": f"chdb://{root / 'chdb'}"})


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[ClickHouseStore]:
    store = ClickHouseStore(settings.clickhouse)
    store.migrate()
    yield store
    store.close()


def items(start: int, stop: int) -> list[WorkItem]:
    lines = DATASET.read_text().splitlines()[start:stop]
    return [WorkItem.model_validate(json.loads(line)) for line in lines]


def answered(
    item: WorkItem, pool: str, model: str, output: str | None = None, job_id: str | None = None
) -> tuple[Assignment, Result]:
    """What the sink receives for one routed item: its assignment (pool topic) and its result."""
    item = item.model_copy(update={"job_id": job_id}) if job_id else item
    label, confidence = SIMULATED.answer(item.input_text(), item.params.labels, model)
    assignment = Assignment(
        item=item,
        task_type=TaskType.CLASSIFICATION,
        task_reason="hint",
        pool=pool,
        rule="t",
        reason="t",
        routed_at=NOW,
    )
    result = Result(
        job_id=item.job_id,
        attempt=1,
        tenant=item.tenant,
        task_type=TaskType.CLASSIFICATION,
        pool=pool,
        provider="p",
        model=model,
        status="ok",
        output=output or label,
        confidence=confidence,
        usage={"input_tokens": 30, "output_tokens": 2},
        latency_ms=5,
        completed_at=NOW,
    )
    return assignment, result


def store_answers(store: ClickHouseStore, pairs: list[tuple[Assignment, Result]]) -> None:
    results = [r for _, r in pairs]
    store.write_batch(results, CATALOG.price(results), [a for a, _ in pairs], [TaskType.CLASSIFICATION])


def test_distillation_raises_agreement_on_the_heldout_slice(
    store: ClickHouseStore, settings: Settings
) -> None:
    store_answers(store, [answered(item, "frontier", "claude-sonnet-5") for item in items(0, 40)])
    too_few = Distiller(settings.distill, ModelRegistry(settings.models_dir), store).run(
        TaskType.CLASSIFICATION, 0.95, 0.2
    )
    assert not too_few.registered and "need 50+" in too_few.reason

    store_answers(store, [answered(item, "frontier", "claude-sonnet-5") for item in items(40, 2000)])
    store_answers(
        store, [answered(item, "slm", SMALL) for item in items(2000, 2100)]
    )  # not a teacher pool: not training data
    examples = load_examples(store, "classification", ["frontier"])
    assert len(examples) == 2000
    _, heldout = split(examples, 0.2)
    small_agreement = sum(
        SIMULATED.answer(e.text, list(e.labels), SMALL)[0] == e.label for e in heldout
    ) / len(heldout)

    outcome = Distiller(settings.distill, ModelRegistry(settings.models_dir), store).run(
        TaskType.CLASSIFICATION, 0.95, 0.2
    )
    assert outcome.heldout == len(heldout) > 300 and outcome.train + outcome.heldout == 2000
    assert (
        outcome.agreement >= 0.95 > small_agreement + 0.15
        and outcome.agreement > outcome.majority_agreement + 0.5
    )
    assert outcome.registered and outcome.registration.version == "v1"
    assert (settings.models_dir / "classification" / "CURRENT").read_text().strip() == "v1"
    registered = store.query("SELECT task, version, trained_on, heldout_agreement FROM model_registry FINAL")
    assert registered == [("classification", "v1", outcome.train, pytest.approx(outcome.agreement))]

    strict = Distiller(settings.distill, ModelRegistry(settings.models_dir), store).run(
        TaskType.CLASSIFICATION, 0.9999, 0.2
    )
    assert not strict.registered and "< target 0.9999" in strict.reason

    diff, proposed = write_proposal(
        settings, TaskType.CLASSIFICATION, "slm", settings.state_dir / "p.yaml", outcome
    )
    assert [r.name for r in proposed.rules][:2] == [
        "distilled-classification",
        "task-classification",
    ]  # before the rule it overrides
    assert outcome.threshold is not None and 0.9 <= outcome.served_share <= 1.0
    applied = proposed.cascades["slm"]  # the calibrated threshold, where the pool reads it
    assert applied.to_pool == "frontier"
    assert applied.min_confidence[TaskType.CLASSIFICATION] == pytest.approx(min(outcome.threshold, 1.0))
    assert (
        "+- name: distilled-classification" in diff
        and "pool slm calls vllm, not the student" in (settings.state_dir / "p.yaml").read_text()
    )


def gauge(name: str, task: str = "classification") -> float | None:
    return REGISTRY.get_sample_value(name, {"task": task})


def test_shadow_alert_gauge_flips_when_agreement_drops(store: ClickHouseStore, settings: Settings) -> None:
    watch = ShadowAgreementWatch(store, settings.shadow_alert)
    pairs = []
    for n, item in enumerate(items(2100, 2140)):
        pairs.append(answered(item, "slm", "student@classification-v1", job_id=f"agree-{n}"))
        teacher = pairs[-1][1].output
        pairs.append(
            answered(item, "frontier", "claude-sonnet-5", output=teacher, job_id=f"shadow:agree-{n}")
        )
    store_answers(store, pairs)
    watch.refresh()
    assert gauge("modelyard_shadow_agreement") == 1.0 and gauge("modelyard_shadow_pairs") == 40
    assert gauge("modelyard_shadow_agreement_low") == 0

    drifted = []
    for n, item in enumerate(items(2140, 2200)):  # the inputs drift: the student now answers differently
        drifted.append(
            answered(item, "slm", "student@classification-v1", output="not-the-teachers", job_id=f"drift-{n}")
        )
        drifted.append(answered(item, "frontier", "claude-sonnet-5", job_id=f"shadow:drift-{n}"))
    store_answers(store, drifted)
    assert watch.due() is False  # the sink refreshes at most every interval_s
    watch.refresh()
    assert (
        gauge("modelyard_shadow_agreement") == pytest.approx(0.4)
        and gauge("modelyard_shadow_agreement_low") == 1
    )


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self._in_heading = tag in ("h2", "h3")

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


def test_report_is_one_html_file_with_embedded_plots(store: ClickHouseStore, tmp_path: Path) -> None:
    pools = [
        ("frontier", "claude-sonnet-5", 0.99, "0.0002"),
        ("slm", "student@classification-v1", 0.96, "0.0000005"),
        ("smol", SMALL, 0.7, "0.000003"),
    ]
    scores = [
        EvalScore(
            run="r-report",
            case_id=f"c{n}",
            job_id=f"eval-{pool}-{n}",
            pool=pool,
            provider="p",
            model=model,
            task_type=TaskType.CLASSIFICATION,
            status="ok",
            correct=n < accuracy * 100,
            score=1.0,
            cost_usd=cost,
            latency_ms=3,
            scored_at=NOW,
        )
        for pool, model, accuracy, cost in pools
        for n in range(100)
    ]
    store.write_evals(scores)
    item = items(2200, 2201)[0]  # a costed shadow pair of its own, so the test stands alone
    store_answers(
        store,
        [
            answered(item, "slm", SMALL, job_id="report-1"),
            answered(item, "frontier", "claude-sonnet-5", job_id="shadow:report-1"),
        ],
    )
    html = HtmlReport(store, target=0.95).render(None, datetime(2020, 1, 1, tzinfo=UTC))
    page = Page()
    page.feed(html)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert {
        "Cost / quality frontier per task",
        "classification",
        "Cost by pool and day",
        "Shadow agreement over time",
        "Registered students",
    } <= set(page.headings)
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src in page.images)
    assert "cheapest pool with accuracy 0.960" in html and "http" not in html.replace("<!doctype html>", "")
