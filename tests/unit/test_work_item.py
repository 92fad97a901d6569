import orjson
import pytest

from schemas import TaskType, WorkItem
from schemas.decoding import MAX_MESSAGE_BYTES, decode
from schemas.rejection import Rejection

VALID = {"job_id": "j-1", "tenant": "acme", "input": "hello"}


def encode(**changes: object) -> bytes:
    return orjson.dumps({**VALID, **changes})


def test_minimal_item_gets_defaults() -> None:
    item = decode(WorkItem, encode())
    assert isinstance(item, WorkItem)
    assert (item.schema_version, item.priority, item.task, item.metadata) == (1, 5, None, {})


def test_chat_input_flattens_to_text() -> None:
    item = decode(
        WorkItem, encode(input=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    )
    assert isinstance(item, WorkItem)
    assert item.input_text() == "be brief\nhi"


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b"", "empty", None),
        (encode(input=None), "validation", "input"),
        (orjson.dumps({"job_id": "j", "tenant": "t"}), "validation", "input"),
        (encode(job_id="has space"), "validation", "job_id"),
        (encode(tenant=""), "validation", "tenant"),
        (encode(priority=10), "validation", "priority"),
        (encode(schema_version=2), "unsupported_schema_version", "schema_version"),
        (encode(task="translate"), "validation", "task"),
        (encode(task="classification"), "validation", "params.labels"),
        (encode(params={"labels": ["a", "a"]}), "validation", "params.labels"),
        (encode(params={"labels": ["only-one"]}), "validation", "params.labels"),
        (encode(params={"max_output_tokens": 0}), "validation", "params.max_output_tokens"),
        (encode(input=[{"role": "robot", "content": "x"}]), "validation", "input.0.role"),
        (encode(deadline="2026-01-01T00:00:00"), "validation", "deadline"),
        (encode(priorty=3), "validation", "priorty"),
        (encode(input="x" * 200_001), "validation", "input"),
    ],
)
def test_bad_input_names_reason_and_field(raw: bytes, reason: str, field: str | None) -> None:
    rejection = decode(WorkItem, raw)
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.field) == (reason, field)
    if field:
        assert field in rejection.error


def test_oversized_message_is_refused_before_parsing() -> None:
    rejection = decode(WorkItem, b" " * (MAX_MESSAGE_BYTES + 1))
    assert isinstance(rejection, Rejection) and rejection.reason == "oversized"


def test_dead_letter_keeps_original_bytes_and_source() -> None:
    import base64

    rejection = decode(WorkItem, b"{oops")
    assert isinstance(rejection, Rejection)
    letter = rejection.dead_letter(
        b"{oops", "router", source_topic="jobs", source_partition=2, source_offset=41
    )
    assert base64.b64decode(letter.original_b64) == b"{oops"
    assert (letter.source_partition, letter.source_offset, letter.reason) == (2, 41, "invalid_json")


def test_task_type_values_are_the_documented_ones() -> None:
    assert [t.value for t in TaskType] == [
        "classification",
        "extraction",
        "summarisation",
        "generation",
        "other",
    ]
