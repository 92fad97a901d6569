"""The router's msgspec fast path accepts only what the pydantic WorkItem accepts, with the same values."""

import random

import msgspec
import orjson

from modelyard.local.demo import sample_lines
from schemas import WorkItem
from schemas.decoding import decode
from schemas.rejection import Rejection
from schemas.work_item_struct import DECODE_WORK_ITEM, WorkItemStruct

STRUCT_ONLY = msgspec.json.Decoder(WorkItemStruct)
VALID = {"job_id": "j-1", "tenant": "acme", "input": "hello"}
EDGE_VALUES: list[object] = [
    None,
    True,
    0,
    5,
    5.0,
    9,
    10,
    -1,
    "5",
    "",
    " ",
    "x",
    "j\n",
    "has space",
    "x" * 129,
    "x" * 200_001,
    "\u00e9t\u00e9",
    [],
    ["a"],
    ["a", "b"],
    ["a", "a"],
    ["", "b"],
    [{"role": "user", "content": "hi"}],
    [{"role": "robot", "content": "x"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "x", "name": "n"}],
    {},
    {"k": "v"},
    {"k": 1},
    {"k" * 129: "v"},
    {f"k{i}": "v" for i in range(65)},
    {"labels": ["a", "b"]},
    {"labels": ["a"]},
    {"json_schema": {"type": "object"}},
    {"json_schema": []},
    {"max_output_tokens": 0},
    {"max_output_tokens": 32_769},
    {"instructions": "x" * 20_001},
    {"extra": 1},
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00+02:00",
    "2026-01-01 00:00:00Z",
    1_700_000_000,
    "classification",
    "generation",
    "translate",
    1,
    2,
    "1",
    "2026-01-01T00:00:00.1234567Z",
    "2026-12-31T23:59:59.9999999Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01t00:00:00z",
    "2026-01-01T00:00:00.5+05:30",
    "2026-01-01T00:00:00+0000",
    "2026-01-01",
]
FIELDS = [
    "job_id",
    "tenant",
    "input",
    "task",
    "params",
    "priority",
    "deadline",
    "metadata",
    "submitted_at",
    "schema_version",
    "unknown",
]


def valid_sample_lines() -> list[bytes]:
    return [raw for _, raw in sample_lines("fuzz") if isinstance(decode(WorkItem, raw), WorkItem)]


def fuzzed_records(count: int, seed: int = 7) -> list[bytes]:
    rng, bases = random.Random(seed), [*[orjson.loads(raw) for raw in valid_sample_lines()][:50], VALID]
    out = []
    for _ in range(count):
        record = dict(rng.choice(bases))
        for name in rng.sample(FIELDS, rng.randint(0, 2)):
            record[name] = rng.choice(EDGE_VALUES)
        out.append(orjson.dumps(record))
    return out


def fast(raw: bytes) -> WorkItemStruct | None:
    try:
        return STRUCT_ONLY.decode(raw)
    except Exception:
        return None


def nested_schema(depth: int) -> bytes:
    """A record whose json_schema nests `depth` objects deep (as text: orjson itself stops at 254)."""
    return (
        b'{"job_id":"j","tenant":"t","input":"x","params":{"json_schema":'
        + b'{"a":' * depth
        + b"{}"
        + b"}" * depth
        + b"}}"
    )


EDGE_RECORDS = [nested_schema(depth) for depth in (10, 63, 64, 150, 196, 197, 199, 300)] + [
    b'{"job_id":"j","tenant":"t","input":"\\ud800"}',
    b'{"job_id":"j","tenant":"t","input":"x","input":"y"}',
    b'{"job_id":"j\\n","tenant":"t","input":"x"}',
    b'{"job_id":"j","tenant":"t","input":"x","deadline":null}',
]


def test_fast_path_accepts_only_what_pydantic_accepts_with_equal_values() -> None:
    accepted = 0
    for raw in fuzzed_records(4000) + EDGE_RECORDS:
        struct, model = fast(raw), decode(WorkItem, raw)
        if struct is None:
            continue
        accepted += 1
        assert isinstance(model, WorkItem), (
            f"fast path accepted what WorkItem rejects: {raw[:200]!r} -> {model}"
        )
        assert struct.to_model() == model, raw[:200]
        assert (struct.input_text(), struct.is_deferrable) == (model.input_text(), model.is_deferrable)
    assert accepted > 1000  # the corpus exercises acceptance, not only rejection


def test_ordinary_traffic_takes_the_fast_path() -> None:
    lines = valid_sample_lines()
    assert len(lines) > 100
    assert all(isinstance(DECODE_WORK_ITEM(raw), WorkItemStruct) for raw in lines)


def test_lax_input_falls_back_to_the_model_and_errors_name_the_field() -> None:
    assert isinstance(DECODE_WORK_ITEM(orjson.dumps({**VALID, "priority": "5"})), WorkItem)
    rejection = DECODE_WORK_ITEM(orjson.dumps({**VALID, "task": "classification"}))
    assert isinstance(rejection, Rejection) and rejection.field == "params.labels"
    assert DECODE_WORK_ITEM(b" " * 1_000_001) == decode(WorkItem, b" " * 1_000_001)
