"""Recorded answers through the whole pipeline: real Kafka, the router with a learned routing model, pools whose
provider is `replay` (MMLU recordings of two real models, and a labelled teacher on Banking77), the sink on a
real chDB engine. Results, costs and routing decisions land in ClickHouse exactly as for a live provider."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import yaml

from modelyard.core.settings import Settings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.processes import ProcessSupervisor
from schemas.recording import RECORDED_RIGHT, RECORDED_WRONG
from tests.integration.test_end_to_end import modelyard, read_topic, rows, wait_for_sink
from workers.pools.backends.replay import stable_fraction
from workers.pools.token_counts import TokenCounter

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
MMLU, BANKING = DATA / "routellm-mmlu-sample.jsonl", DATA / "banking77-sample.jsonl"
STRONG, WEAK, TEACHER = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1", "claude-sonnet-5"
POOL_MODELS = {"weak": WEAK, "strong": STRONG}


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def configure(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    config = {
        "providers": {
            "replay": {"api": "replay", "recording": str(MMLU)},
            "teacher": {"api": "replay", "recording": str(BANKING), "teacher_accuracy": 0.8},
        },
        "pools": {
            "weak": {"provider": "replay", "model": WEAK},
            "strong": {"provider": "replay", "model": STRONG},
            "teacher": {"provider": "teacher", "model": TEACHER},
        },
    }
    policy = {
        "default_pool": "strong",
        "rules": [{"name": "labelled", "when": {"task": ["classification"]}, "pool": "teacher"}],
        "novelty": {"enabled": False},
        "learned": {"models_dir": str(tmp_path / "routing")},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    return {
        **env,
        "MODELYARD_CONFIG": str(tmp_path / "config.yaml"),
        "MODELYARD_ROUTER__POLICY_FILE": str(tmp_path / "policy.yaml"),
    }


def jobs(tmp_path: Path) -> tuple[list[dict], dict[str, dict]]:
    mmlu, banking = lines(MMLU)[:60], lines(BANKING)[:40]
    labels = sorted({r["label"] for r in lines(BANKING)})
    items, truth = [], {}
    for n, r in enumerate(mmlu):
        items.append(
            {
                "job_id": f"mmlu-{n}",
                "tenant": "acme",
                "task": "other",
                "input": r["prompt"],
                "metadata": {"category": r["category"]},
            }
        )
        truth[f"mmlu-{n}"] = r
    for n, r in enumerate(banking):
        items.append(
            {"job_id": f"bank-{n}", "tenant": "acme", "input": r["text"], "params": {"labels": labels}}
        )
        truth[f"bank-{n}"] = r
    items.append(
        {"job_id": "unknown-1", "tenant": "acme", "task": "other", "input": "a question nobody recorded"}
    )
    (tmp_path / "jobs.jsonl").write_bytes(b"\n".join(orjson.dumps(i) for i in items) + b"\n")
    return items, truth


def test_recorded_answers_flow_through_router_pools_and_sink(
    pipeline_env: dict[str, str], pipeline_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = configure(tmp_path, pipeline_env)
    monkeypatch.setenv("MODELYARD_CONFIG", env["MODELYARD_CONFIG"])
    fitted = modelyard(
        env,
        "routing",
        "fit",
        "--recording",
        str(MMLU),
        "--pool",
        f"weak={WEAK}",
        "--pool",
        f"strong={STRONG}",
        "--out",
        str(tmp_path / "routing"),
        "--target",
        "0.8",
    )
    assert fitted.returncode == 0, fitted.stderr
    settings = load_settings()
    items, truth = jobs(tmp_path)
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        for name, *args in [
            ("sink", "sink"),
            ("router", "router"),
            *[(f"pool-{p}", "pool", p) for p in ("weak", "strong", "teacher")],
        ]:
            supervisor.start(name, *args)
        submitted = modelyard(env, "submit", str(tmp_path / "jobs.jsonl"))
        assert submitted.returncode == 0, submitted.stderr
        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, len(items), timeout=180))
        assert len(results) == len(items), supervisor.tail("router")
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")

    stored = {
        r["job_id"]: r
        for r in rows(
            env, "SELECT job_id, pool, model, status, output, error, input_tokens FROM results FINAL"
        )
    }
    assert set(stored) == {i["job_id"] for i in items}
    assert stored["unknown-1"]["status"] == "error" and "not in the recording" in stored["unknown-1"]["error"]
    counter = TokenCounter()
    for job_id, row in stored.items():
        if job_id.startswith("mmlu-"):
            model = POOL_MODELS[row["pool"]]
            right = truth[job_id]["scores"][model] == 1
            assert (row["status"], row["model"]) == ("ok", model)
            assert row["output"] == (RECORDED_RIGHT if right else RECORDED_WRONG)
            assert int(row["input_tokens"]) == counter.count(truth[job_id]["prompt"])
        elif job_id.startswith("bank-"):
            right = stable_fraction(job_id, TEACHER) < 0.8
            assert (row["pool"], row["model"]) == ("teacher", TEACHER)
            assert (row["output"] == truth[job_id]["label"]) == right, (job_id, row["output"])

    pools = {r["pool"] for r in stored.values() if r["pool"] in POOL_MODELS}
    assert pools == {"weak", "strong"}  # the learned router sent some items each way
    decisions = rows(
        env, "SELECT job_id, rule, pool FROM routing_decisions FINAL WHERE startsWith(job_id, 'mmlu-')"
    )
    assert {d["rule"] for d in decisions} == {"learned"} and len(decisions) == 60
    costs = rows(
        env,
        "SELECT r.pool AS pool, c.catalog_version AS version, min(c.total_cost_usd) AS least, "
        "sum(c.total_cost_usd) / count() AS mean FROM cost_ledger AS c FINAL "
        "JOIN results AS r FINAL ON c.job_id = r.job_id AND c.attempt = r.attempt "
        "WHERE r.status = 'ok' GROUP BY r.pool, c.catalog_version",
    )
    by_pool = {c["pool"]: c for c in costs}
    assert by_pool["weak"]["version"] == by_pool["strong"]["version"] == "recorded@2024-06-01"
    assert float(by_pool["weak"]["least"]) > 0 and float(by_pool["weak"]["mean"]) * 10 < float(
        by_pool["strong"]["mean"]
    )
    assert by_pool["teacher"]["version"].startswith("anthropic@") and float(by_pool["teacher"]["least"]) > 0
