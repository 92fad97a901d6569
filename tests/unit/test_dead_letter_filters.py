from datetime import UTC, datetime, timedelta

import pytest

from modelyard.app import build_admission
from modelyard.core._exceptions import InvalidInput
from modelyard.core.settings import load_settings
from modelyard.ops.dead_letters import LetterFilter, StoredLetter, decoded_original, recheck
from schemas import WorkItem
from schemas.decoding import decode
from schemas.rejection import Rejection

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def stored(
    raw: bytes, stage: str = "router", offset: int = 0, at: datetime = NOW, **source: object
) -> StoredLetter:
    rejection = decode(WorkItem, raw)
    rejection = rejection if isinstance(rejection, Rejection) else Rejection("router_error", None, "boom")
    letter = rejection.dead_letter(raw, stage, **source).model_copy(update={"at": at})
    return StoredLetter.from_record(0, offset, 0, letter.model_dump_json().encode())


def test_parse_when_reads_durations_and_iso_times() -> None:
    from modelyard.ops.dead_letters import parse_when

    assert parse_when("1h", NOW) == NOW - timedelta(hours=1)
    assert parse_when("90s", NOW) == NOW - timedelta(seconds=90)
    assert parse_when("2d", NOW) == NOW - timedelta(days=2)
    assert parse_when("2026-11-24T10:00:00", NOW) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="cannot read"):
        parse_when("yesterday", NOW)


def test_filter_by_reason_stage_and_time() -> None:
    old = stored(b"not json", stage="submit", at=NOW - timedelta(hours=3), source_line=4)
    new = stored(b'{"job_id": "x", "tenant": "t"}', source_topic="jobs", source_partition=1, source_offset=9)
    assert old.letter.reason == "invalid_json" and new.letter.reason == "validation"
    assert [LetterFilter(reasons=frozenset({"validation"})).matches(s) for s in (old, new)] == [False, True]
    assert [LetterFilter(stages=frozenset({"submit"})).matches(s) for s in (old, new)] == [True, False]
    assert [LetterFilter(since=NOW - timedelta(hours=1)).matches(s) for s in (old, new)] == [False, True]
    assert (old.source, new.source) == ("line 4", "jobs[1]@9")


def test_a_record_that_is_no_dead_letter_is_listed_but_never_replayed() -> None:
    foreign = StoredLetter.from_record(0, 3, 0, b"garbage")
    assert foreign.letter is None and foreign.summary()["reason"] == "not_a_dead_letter"
    assert LetterFilter().matches(foreign) and not LetterFilter(reasons=frozenset({"validation"})).matches(
        foreign
    )
    assert isinstance(recheck(foreign, build_admission(load_settings(), replay=True)), Rejection)


def test_recheck_accepts_a_now_valid_original_and_decodes_it_for_show() -> None:
    raw = b'{"job_id": "j-1", "tenant": "acme", "input": "hello"}'
    letter = stored(raw)
    assert isinstance(recheck(letter, build_admission(load_settings(), replay=True)), WorkItem)
    assert '"job_id": "j-1"' in decoded_original(letter)
    assert isinstance(
        recheck(letter, build_admission(load_settings(router={"known_tenants": ["other"]}), replay=True)),
        Rejection,
    )
    assert decoded_original(stored(b"\xff\xfe bytes")) == "\\xff\\xfe bytes"
