"""The SLM pool against a real vLLM server on CPU (SmolLM2-135M from a package), not the simulator.

One server per module (cold start ~30-70 s on 2 cores). Needs `make slm-cpu` (`make test` builds it);
deselect locally with `pytest -m "not vllm_cpu"`. The model classifies at about chance: these tests check
what the pipeline promises (answers inside the label set or schema, real usage, one result and one cost
row per job), not accuracy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import orjson
import pytest

from modelyard.app import build_backend
from modelyard.core.settings import Settings, SlmServerSettings, load_settings
from modelyard.core.topics import ensure_topics
from modelyard.local.demo import sample_lines
from modelyard.local.processes import ProcessSupervisor
from modelyard.local.slm_server import CpuSlmServer
from schemas import TaskType, WorkItem
from schemas.decoding import decode
from tests.helpers import free_port, modelyard, read_topic, rows, wait_for_sink

pytestmark = [pytest.mark.integration, pytest.mark.vllm_cpu]

ALL_TO_SLM = "version: 1\ndefault_pool: slm\nnovelty: {enabled: false}\n"


@pytest.fixture(scope="module")
def slm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlmServerSettings]:
    settings = load_settings(state_dir=tmp_path_factory.mktemp("slm-state"), slm_server={"port": free_port()})
    server = CpuSlmServer(settings.slm_server, settings.state_dir, settings.logs_dir)
    server.prepare()  # idempotent: converts into .modelyard/models once per checkout
    assert server.start(), f"something already serves on {settings.slm_server.url}"
    try:
        yield settings.slm_server
    finally:
        server.stop()


def sample_items(run: str, task: TaskType, count: int) -> list[WorkItem]:
    """The first `count` valid sample items of one task type (the sample also holds malformed lines)."""
    decoded = (decode(WorkItem, raw) for _, raw in sample_lines(run))
    items = [item for item in decoded if isinstance(item, WorkItem) and item.task is task][:count]
    assert len(items) == count, f"the sample has {len(items)} {task.value} items, wanted {count}"
    return items


async def complete_all(settings: Settings, items: list[WorkItem], task_type: TaskType) -> list:
    backend = build_backend(settings, "slm")
    try:
        return await asyncio.gather(*(backend.complete(item, task_type) for item in items))
    finally:
        await backend.close()


def test_backend_classifies_within_labels_with_usage_and_confidence(slm_server: SlmServerSettings) -> None:
    settings = load_settings(providers={"vllm": {"base_url": slm_server.url}})
    assert settings.pools["slm"].model == slm_server.served_model_name
    items = sample_items("cls", TaskType.CLASSIFICATION, 12)
    done = asyncio.run(complete_all(settings, items, TaskType.CLASSIFICATION))
    for item, completion in zip(items, done, strict=True):
        assert completion.output in item.params.labels, (completion.output, item.params.labels)
        assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
        assert completion.confidence is not None and 0 < completion.confidence <= 1
        assert completion.model == slm_server.served_model_name


def test_backend_extracts_json_matching_the_schema(slm_server: SlmServerSettings) -> None:
    settings = load_settings(providers={"vllm": {"base_url": slm_server.url}})
    items = sample_items("ext", TaskType.EXTRACTION, 4)
    done = asyncio.run(complete_all(settings, items, TaskType.EXTRACTION))
    for item, completion in zip(items, done, strict=True):
        jsonschema.validate(orjson.loads(completion.output), item.params.json_schema)
        assert completion.usage.output_tokens > 0


def test_jobs_from_kafka_reach_chdb_through_the_real_vllm_pool(
    slm_server: SlmServerSettings,
    pipeline_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    run_id: str,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALL_TO_SLM)
    env = {
        **pipeline_env,
        "MODELYARD_PROVIDERS__VLLM__BASE_URL": slm_server.url,
        "MODELYARD_ROUTER__POLICY_FILE": str(policy),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    items = sample_items(run_id, TaskType.CLASSIFICATION, 24) + sample_items(run_id, TaskType.EXTRACTION, 6)
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_bytes(
        b"\n".join(item.model_dump_json(exclude_none=True).encode() for item in items) + b"\n"
    )
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    with ProcessSupervisor(tmp_path / "logs", env=env) as supervisor:
        for name, *args in [("sink", "sink"), ("router", "router"), ("pool-slm", "pool", "slm")]:
            supervisor.start(name, *args)
        submitted = modelyard(env, "submit", str(jobs_file))
        assert submitted.returncode == 0, submitted.stderr
        results = asyncio.run(read_topic(settings, settings.kafka.results_topic, len(items), timeout=300))
        assert len(results) == len(items), supervisor.tail("pool-slm")
        asyncio.run(wait_for_sink(settings, supervisor))
        supervisor.stop("sink")

    stored = rows(
        env,
        "SELECT job_id, attempt, pool, provider, model, status, output, input_tokens, output_tokens FROM results FINAL",
    )
    costs = rows(
        env, "SELECT job_id, count() AS n, sum(total_cost_usd) AS usd FROM cost_ledger FINAL GROUP BY job_id"
    )
    assert sorted(r["job_id"] for r in stored) == sorted(item.job_id for item in items)
    assert {(r["attempt"], r["pool"], r["provider"], r["model"], r["status"]) for r in stored} == {
        (1, "slm", "vllm", slm_server.served_model_name, "ok")
    }
    assert all(int(r["input_tokens"]) > 0 and int(r["output_tokens"]) > 0 for r in stored)
    labels = {item.job_id: item.params.labels for item in items if item.params.labels}
    assert all(r["output"] in labels[r["job_id"]] for r in stored if r["job_id"] in labels)
    assert len(costs) == len(items) and all(r["n"] == 1 and float(r["usd"]) > 0 for r in costs)
