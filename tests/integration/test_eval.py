"""`modelyard eval` through the real pipeline, then `modelyard policy recommend` on what the sink stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor, wait_for_port
from streams.rules import load_policy_file
from tests.helpers import modelyard, rows, wait_for_sink

pytestmark = pytest.mark.integration
BUNDLED = Path(__file__).resolve().parents[2] / "modelyard/data/eval_cases.jsonl"


def test_eval_scores_pools_and_recommends_a_policy(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path
) -> None:
    settings, dataset = pipeline_settings, tmp_path / "cases.jsonl"
    cases = BUNDLED.read_text().splitlines()[:40]
    dataset.write_text("\n".join(cases) + "\n")
    expected = {orjson.loads(c)["item"]["job_id"]: orjson.loads(c)["expected"] for c in cases}
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=pipeline_env) as supervisor:
        supervisor.start("simulator", "simulator")
        wait_for_port("127.0.0.1", settings.simulator.port, 30, supervisor)
        for name, *args in [
            ("sink", "sink"),
            ("pool-slm", "pool", "slm"),
            ("pool-frontier", "pool", "frontier"),
        ]:
            supervisor.start(name, *args)
        done = modelyard(
            pipeline_env, "eval", str(dataset), "--pools", "slm,frontier", "--run", "r1", "--timeout", "120"
        )
        assert done.returncode == 0, done.stderr
        assert "eval run r1: 40 cases x 2 pools" in done.stdout
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")
    scores = rows(
        pipeline_env,
        "SELECT case_id, pool, correct, job_id, cost_usd FROM eval_results FINAL WHERE run = 'r1'",
    )
    assert len(scores) == 80 and {s["pool"] for s in scores} == {"slm", "frontier"}
    answers = {
        r["job_id"]: r["output"]
        for r in rows(pipeline_env, "SELECT job_id, output FROM results WHERE tenant = 'eval'")
    }
    for s in scores:
        want = expected[s["case_id"]]
        if isinstance(want, str):
            assert bool(s["correct"]) == (answers[s["job_id"]] == want)
    out = tmp_path / "recommended.yaml"
    recommended = modelyard(
        pipeline_env, "policy", "recommend", "--run", "r1", "--target-quality", "0.2", "--out", str(out)
    )
    assert recommended.returncode == 0, recommended.stderr
    policy = load_policy_file(out, set(load_settings().pools))
    assert {r.name for r in policy.rules} == {"recommended-classification", "recommended-extraction"}
    assert "classification:" in recommended.stdout
