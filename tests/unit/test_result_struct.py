"""The sink's msgspec fast path for Result never accepts what pydantic refuses, and decodes to equal values.

A corpus of valid and invalid result records (every field's edges, odd JSON, odd times) goes through both
parsers: fast accepts => pydantic accepts with equal field values. Whatever the fast path refuses gets
pydantic's verdict unchanged (the same Rejection, so the same dead letter)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError

from schemas.decoding import StructFirst, decode
from schemas.result import MAX_ATTEMPT, MAX_CALL_ID, MAX_TOKENS, Result, ResultStruct, new_call_id

BASE: dict[str, Any] = {
    "job_id": "job-1",
    "attempt": 1,
    "tenant": "acme",
    "task_type": "classification",
    "pool": "slm",
    "provider": "vllm",
    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "status": "ok",
    "output": "billing",
    "confidence": 0.9,
    "usage": {"input_tokens": 120, "cached_input_tokens": 3, "output_tokens": 2},
    "latency_ms": 42.5,
    "completed_at": "2026-11-24T23:53:04.123456Z",
}
ORIGIN: dict[str, Any] = {
    "job_id": "job-0",
    "attempt": 1,
    "provider": "anthropic",
    "model": "claude-sonnet-5",
    "completed_at": "2026-11-24T23:50:00Z",
}
FIELD_VALUES: dict[str, list[Any]] = {
    "schema_version": [1, 2, 0, "1", 1.0, True, None],
    "job_id": ["", "it's", 'say "hi"\\', "line\nbreak", "ünï\u2028", "\u0000", 7, None, ["a"]],
    "attempt": [1, 2, MAX_ATTEMPT, MAX_ATTEMPT + 1, 0, -1, 1.0, 1.5, "1", True, None, 2**64],
    "tenant": ["t", "", 1, None],
    "task_type": [
        "classification",
        "extraction",
        "summarisation",
        "generation",
        "other",
        "Other",
        "x",
        1,
        None,
    ],
    "pool": ["frontier", 0],
    "provider": ["anthropic", None],
    "model": ["claude-sonnet-5", "student@classification-v3", False],
    "status": ["ok", "error", "failed_over", "escalated", "OK", "done", None],
    "output": [None, "", "a" * 10_000, 5],
    "confidence": [None, 0, 0.0, -0.0, 1, 1.0, 1.0000001, -0.1, 2, "0.5", True, 1e-320],
    "error": [None, "", "e" * 2000, "e" * 2001, "ü" * 2000, "😀" * 2000, "😀" * 2001, 3],
    "usage": [{}, None, [], "x", {"input_tokens": 5, "unknown": 1}],
    "latency_ms": [
        0,
        0.0,
        -0.0,
        12,
        1e308,
        1e400,
        10**400,
        -1,
        -1e-9,
        "3",
        True,
        None,
        0.1 + 0.2,
        1.7976931348623157e308,
    ],
    "batch": [True, False, 1, 0, "true", None],
    "cached": [True, False, 1, 0, "true", None],
    "cached_from": [
        None,
        ORIGIN,
        {**ORIGIN, "usage": {"input_tokens": 4, "output_tokens": 2}, "batch": True},
        {**ORIGIN, "completed_at": "2026-11-24T23:53:04.1234567Z"},
        {**ORIGIN, "completed_at": "2026-11-24T23:53:04"},
        {**ORIGIN, "attempt": 0},
        {**ORIGIN, "attempt": "1"},
        {**ORIGIN, "extra": 1},
        {k: v for k, v in ORIGIN.items() if k != "model"},
        {**ORIGIN, "usage": {"input_tokens": -1}},
        [],
        "x",
    ],
    "call_id": [
        "",
        "0" * 32,
        "c" * MAX_CALL_ID,
        "c" * (MAX_CALL_ID + 1),
        "ü" * MAX_CALL_ID,
        "😀" * MAX_CALL_ID,
        "😀" * (MAX_CALL_ID + 1),
        5,
        None,
        ["x"],
    ],
    "completed_at": [
        "2026-11-24T23:53:04Z",
        "2026-11-24T23:53:04.1Z",
        "2026-11-24T23:53:04.000001+02:00",
        "2026-11-24T23:53:04-00:00",
        "2026-11-24T23:53:04+23:59",
        "2026-11-24T23:53:04+24:00",
        "2026-11-24T23:53:04+12:60",
        "2026-11-24T23:53:04+0100",
        "2026-11-24T23:53:04.1234567Z",
        "2026-11-24T23:53:04.9999999Z",
        "2026-11-24T23:53:04",
        "2026-11-24t23:53:04z",
        "2026-11-24 23:53:04Z",
        "2026-11-24T23:53Z",
        "2026-12-31T23:59:60Z",
        "2026-11-24T24:00:00Z",
        "2025-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999-01:00",
        "20261124T235304Z",
        "2026-W48-2T00:00:00Z",
        "2026-11-24T23:53:04Z\n",
        "2026-11-24X23:53:04Z",
        "２０２６-11-24T23:53:04Z",
        "2026-11-24",
        "2026-11-24T23:53:04+01",
        "2026-11-24T23:53:04+01:00:00",
        "2026-11-24T23:53:04,1Z",
        "2026-11-24T23:53:04.Z",
        "2026-11-24T23:53:04-23:59",
        "2026-11-24T23:53:04 +01:00",
        "+2026-11-24T23:53:04Z",
        "2026-11-24T23:53:04.123456789012Z",
        "2026-11-24T23:53:04.1234567+01:00",
        "2026-11-24T23:53:04.5-01:30",
        1764028384,
        1764028384.5,
        None,
    ],
}
USAGE_VALUES = [0, 1, MAX_TOKENS, MAX_TOKENS + 1, -1, 1.0, "1", True, None]
RAW: list[bytes] = [
    b"",
    b"{not json",
    b"[]",
    b"null",
    b'"x"',
    b"{}",
    b'{"job_id": "x"}',
    b'{"job_id":"y","tenant":"t","input":"z","priority":11}',
    json.dumps(BASE).encode() + b"x",
    b"  " + json.dumps(BASE).encode() + b"\n",
    json.dumps(BASE).encode().replace(b"job-1", b"\\ud800"),
    json.dumps(BASE).encode().replace(b"job-1", b"job\xff"),
    json.dumps(BASE).encode().replace(b"job-1", b"a\x01b"),
    json.dumps(BASE).encode().replace(b'"job_id": "job-1"', b'"job_id": "a", "job_id": "b"'),
    json.dumps(BASE).encode().replace(b'"attempt": 1', b'"attempt": 1, "attempt": 0'),
    json.dumps(BASE).encode().replace(b'"latency_ms": 42.5', b'"latency_ms": NaN'),
    json.dumps(BASE).encode().replace(b'"latency_ms": 42.5', b'"latency_ms": Infinity'),
    json.dumps({**BASE, "extra": 1}).encode(),
]


def corpus() -> list[bytes]:
    records = [dict(BASE), {k: v for k, v in BASE.items() if k not in ("output", "confidence", "usage")}]
    for name, values in FIELD_VALUES.items():
        records += [{**BASE, name: value} for value in values]
        records.append({k: v for k, v in BASE.items() if k != name})
    for kind in (
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "reasoning_tokens",
    ):
        records += [{**BASE, "usage": {kind: value}} for value in USAGE_VALUES]
    return (
        [json.dumps(r, ensure_ascii=False).encode() for r in records]
        + [json.dumps(r).encode() for r in records[:40]]
        + RAW
    )


def fast(raw: bytes) -> ResultStruct | None:
    try:
        return msgspec.json.decode(raw, type=ResultStruct)
    except (msgspec.MsgspecError, ValueError):
        return None


def authority(raw: bytes) -> Result | None:
    try:
        return Result.model_validate_json(raw)
    except ValidationError:
        return None


def same_values(struct: ResultStruct, model: Result) -> None:
    for name in Result.model_fields:
        got, want = getattr(struct, name), getattr(model, name)
        if name == "usage":
            assert msgspec.structs.asdict(got) == want.model_dump()
        elif name == "cached_from" and want is not None:
            fields = msgspec.structs.asdict(got)
            assert {**fields, "usage": msgspec.structs.asdict(fields["usage"])} == want.model_dump()
        elif name == "completed_at":
            assert (got, got.utcoffset()) == (want, want.utcoffset())
        else:
            assert (got, type(got)) == (want, type(want)), name


@pytest.mark.parametrize("raw", corpus(), ids=lambda raw: raw[:70].decode(errors="replace"))
def test_fast_path_accepts_only_what_pydantic_accepts_with_equal_values(raw: bytes) -> None:
    struct, model = fast(raw), authority(raw)
    if struct is not None:
        assert model is not None, "the fast path accepted a record pydantic refuses"
        same_values(struct, model)
    elif model is None:  # refused by both: the sink's verdict is pydantic's, unchanged
        assert StructFirst(ResultStruct, Result)(raw) == decode(Result, raw)


def test_fast_path_takes_what_producers_write() -> None:
    """Results as the pools serialize them (pydantic's JSON) decode on the fast path, not the slow one."""
    model = Result.model_validate(BASE)
    for record in (
        model,
        model.model_copy(update={"batch": True, "error": "boom", "output": None, "confidence": None}),
        model.model_copy(update={"call_id": new_call_id()}),
    ):
        decoded = StructFirst(ResultStruct, Result)(record.model_dump_json().encode())
        assert isinstance(decoded, ResultStruct)
        same_values(decoded, record)


def test_corpus_covers_both_sides() -> None:
    verdicts = [(fast(raw) is not None, authority(raw) is not None) for raw in corpus()]
    assert verdicts.count((True, True)) > 50 and verdicts.count((False, False)) > 50
    assert (
        verdicts.count((False, True)) > 10
    )  # lax inputs pydantic coerces: they take the slow path, still accepted
