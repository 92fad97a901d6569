"""`modelyard report` in a real browser: headless Chromium (Debian's `chromium` package) loads the page and
every plot image decodes; the cost-by-day axis spans the data's days.

CI installs chromium (.ci/run); elsewhere the test is skipped, saying so, when no chromium is on the PATH."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelyard.core.settings import load_settings
from modelyard.ops.report import HtmlReport
from schemas import Result, TaskType
from schemas.evaluation import EvalScore
from workers.sink.clickhouse import ClickHouseStore
from workers.sink.pricing import PriceCatalog

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
# appended to a copy of the page: once everything loaded, say how each image decoded
PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));
  const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(images);
  document.body.appendChild(out);
});</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip(
            "no chromium on the PATH (apt-get install chromium); the report's browser check needs one"
        )
    return found


def result(job_id: str, pool: str, model: str, output: str, at: datetime) -> Result:
    return Result(
        job_id=job_id,
        attempt=1,
        tenant="acme",
        task_type=TaskType.CLASSIFICATION,
        pool=pool,
        provider="p",
        model=model,
        status="ok",
        output=output,
        usage={"input_tokens": 40, "output_tokens": 2},
        latency_ms=5,
        completed_at=at,
    )


def seed(store: ClickHouseStore) -> None:
    """Three days of costs, one day of shadow pairs, and an eval run of two pools."""
    results = [
        result(f"day{d}-{pool}-{n}", pool, model, "billing", NOW - timedelta(days=d))
        for d in range(3)
        for pool, model in (("slm", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("frontier", "claude-sonnet-5"))
        for n in range(5)
    ]
    results += [
        result(f"shadow:day0-slm-{n}", "frontier", "claude-sonnet-5", "billing", NOW) for n in range(5)
    ]
    store.write_batch(results, PriceCatalog.load(None, "claude-sonnet-5").price(results))
    store.write_evals(
        [
            EvalScore(
                run="r-browser",
                case_id=f"c{n}",
                job_id=f"eval-{pool}-{n}",
                pool=pool,
                provider="p",
                model=pool,
                task_type=TaskType.CLASSIFICATION,
                status="ok",
                correct=n < accuracy * 20,
                score=1.0,
                cost_usd=cost,
                latency_ms=3,
                scored_at=NOW,
            )
            for pool, accuracy, cost in (("frontier", 0.99, "0.0002"), ("slm", 0.9, "0.000001"))
            for n in range(20)
        ]
    )


def test_every_plot_loads_in_chromium(tmp_path: Path) -> None:
    browser = chromium()
    store = ClickHouseStore(load_settings(clickhouse={"dsn": f"chdb://{tmp_path / 'chdb'}"}).clickhouse)
    try:
        store.migrate()
        seed(store)
        html = HtmlReport(store, target=0.95).render(None, NOW - timedelta(days=7))
    finally:
        store.close()
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    done = subprocess.run(
        [*common, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not finish loading in chromium: {done.stderr[-1000:]}"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == 3  # frontier, cost by day, shadow agreement
    assert all(i["complete"] and i["width"] >= 600 and i["height"] >= 300 for i in images), images
    shot = tmp_path / "report.png"  # kept with the test's files, to look at
    subprocess.run(
        [*common, "--window-size=1100,2600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
