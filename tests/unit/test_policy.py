import orjson
import pytest

from modelyard.settings import load_settings
from schemas import Assignment, DeadLetter, TaskType, WorkItem
from streams.policy import RoutingPolicy, Source, infer_task

SOURCE = Source("modelyard.jobs", 0, 7)


@pytest.mark.parametrize(
    ("item", "task", "pool"),
    [
        ({"task": "classification", "params": {"labels": ["a", "b"]}}, TaskType.CLASSIFICATION, "slm"),
        ({"params": {"labels": ["a", "b"]}}, TaskType.CLASSIFICATION, "slm"),
        ({"params": {"json_schema": {"type": "object"}}}, TaskType.EXTRACTION, "slm"),
        ({"task": "extraction"}, TaskType.EXTRACTION, "slm"),
        ({"task": "summarisation"}, TaskType.SUMMARISATION, "frontier"),
        ({"task": "generation"}, TaskType.GENERATION, "frontier"),
        ({}, TaskType.OTHER, "frontier"),
    ],
)
def test_route_table(item: dict, task: TaskType, pool: str) -> None:
    policy = RoutingPolicy(load_settings())
    work = WorkItem.model_validate({"job_id": "j", "tenant": "t", "input": "x", **item})
    assignment = policy.assign(work)
    assert (assignment.task_type, assignment.pool) == (task, pool)
    assert assignment.task_reason == ("hint" if "task" in item else infer_task(work)[1])


def test_configured_routes_override_defaults() -> None:
    settings = load_settings(routes={"classification": "frontier"})
    pool, reason = RoutingPolicy(settings).pool_for(TaskType.CLASSIFICATION)
    assert pool == "frontier" and "classification" in reason


def test_unknown_pool_in_routes_is_a_config_error() -> None:
    from modelyard._exceptions import ConfigError

    with pytest.raises(ConfigError, match="routes"):
        load_settings(routes={"classification": "nope"})


def test_valid_record_goes_to_its_pool_topic_keyed_by_job_id() -> None:
    policy = RoutingPolicy(load_settings())
    out = policy.route(orjson.dumps({"job_id": "j9", "tenant": "t", "input": "x", "task": "generation"}), SOURCE)
    assert (out.topic, out.key) == ("modelyard.pool.frontier", b"j9")
    assert Assignment.model_validate_json(out.value).item.job_id == "j9"


@pytest.mark.parametrize("raw", [b"nope", None, b'{"job_id": "j"}', b'{"job_id":"j","tenant":"t","input":"x","schema_version":9}'])
def test_invalid_record_goes_to_dead_letter_with_source(raw: bytes | None) -> None:
    out = RoutingPolicy(load_settings()).route(raw, SOURCE)
    letter = DeadLetter.model_validate_json(out.value)
    assert out.topic == "modelyard.deadletter"
    assert (letter.stage, letter.source_topic, letter.source_partition, letter.source_offset) == ("router", "modelyard.jobs", 0, 7)
