import asyncio
import json
import logging

import pytest

from modelyard.core.logs import JsonFormatter, RedactingFormatter, current_job_id, secret_values
from modelyard.core.observability import POOL_JOBS, Health, start_health_server
from modelyard.core.settings import MetricsSettings, load_settings
from schemas import TaskType, Usage, WorkItem
from tests.helpers import free_port, get
from workers.pools.backends.base import Completion
from workers.pools.metered import MeteredBackend


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("modelyard.pool", logging.INFO, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_the_job_id_from_the_task_or_the_record() -> None:
    formatter = JsonFormatter("pool-slm")
    assert "job_id" not in json.loads(formatter.format(record("idle")))
    token = current_job_id.set("j-7")
    try:
        line = json.loads(formatter.format(record("calling %s", "model", attempt=2)))
    finally:
        current_job_id.reset(token)
    assert (line["job_id"], line["message"], line["process"], line["attempt"]) == (
        "j-7",
        "calling model",
        "pool-slm",
        2,
    )
    assert json.loads(formatter.format(record("x", job_id="j-8")))["job_id"] == "j-8"


def test_configured_secrets_are_masked_in_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_PROVIDERS__OPENAI__API_KEY", "sk-openai-SEKRIT")
    monkeypatch.setenv("MODELYARD_KAFKA__SASL_PASSWORD", "kafka-SEKRIT")
    monkeypatch.setenv("MODELYARD_CLICKHOUSE__PASSWORD", "ch-SEKRIT")
    secrets = secret_values(load_settings())
    assert set(secrets) == {"sk-openai-SEKRIT", "kafka-SEKRIT", "ch-SEKRIT"}
    line = RedactingFormatter(JsonFormatter("router"), secrets).format(
        record("auth with %s", "sk-openai-SEKRIT")
    )
    assert "SEKRIT" not in line and "***" in line


class FakeBackend:
    provider = "vllm"

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        assert current_job_id.get() == item.job_id
        if self.fail:
            raise RuntimeError("down")
        return Completion(output="a", usage=Usage(), model="m")

    async def close(self) -> None: ...


def test_metered_backend_counts_outcomes() -> None:
    item = WorkItem(job_id="j-1", tenant="acme", input="hi")
    before = {s: POOL_JOBS.labels("metered", "vllm", s)._value.get() for s in ("ok", "error")}
    asyncio.run(MeteredBackend(FakeBackend(False), "metered").complete(item, TaskType.OTHER))
    with pytest.raises(RuntimeError):
        asyncio.run(MeteredBackend(FakeBackend(True), "metered").complete(item, TaskType.OTHER))
    after = {s: POOL_JOBS.labels("metered", "vllm", s)._value.get() for s in ("ok", "error")}
    assert after == {"ok": before["ok"] + 1, "error": before["error"] + 1}


def test_probes_and_metrics_endpoint() -> None:
    async def scenario() -> list[tuple[int, str]]:
        state = {"ready": False}
        settings = MetricsSettings(host="127.0.0.1", port=free_port())
        server = await start_health_server(settings, Health(ready=lambda: state["ready"]))
        base = f"http://127.0.0.1:{settings.port}"
        try:
            answers = [await asyncio.to_thread(get, f"{base}/{path}") for path in ("healthz", "readyz")]
            state["ready"] = True
            answers += [await asyncio.to_thread(get, f"{base}/{path}") for path in ("readyz", "metrics")]
        finally:
            await server.stop()
        return answers

    (live, _), (not_ready, _), (ready, _), (status, metrics) = asyncio.run(scenario())
    assert (live, not_ready, ready, status) == (200, 503, 200, 200)
    assert "modelyard_pool_jobs_total" in metrics and "modelyard_consumer_lag" in metrics
    assert asyncio.run(start_health_server(MetricsSettings(port=0), Health())) is None


def test_a_taken_metrics_port_is_one_clear_error() -> None:
    import socket

    from modelyard.core._exceptions import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = MetricsSettings(host="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1"):
            asyncio.run(start_health_server(settings, Health()))
