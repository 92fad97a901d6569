from modelyard.ops.submit import check_lines
from schemas import WorkItem
from schemas.rejection import Rejection


def test_duplicates_and_blanks_are_reported_not_skipped() -> None:
    lines = [
        (1, b'{"job_id":"a","tenant":"t","input":"x"}'),
        (2, b""),
        (3, b'{"job_id":"a","tenant":"t","input":"y"}'),
        (4, b"{"),
    ]
    checked = {n: v for n, _, v in check_lines(lines)}
    assert isinstance(checked[1], WorkItem)
    assert isinstance(checked[2], Rejection) and checked[2].reason == "blank"
    assert isinstance(checked[3], Rejection) and (checked[3].reason, checked[3].field) == (
        "duplicate_job_id",
        "job_id",
    )
    assert isinstance(checked[4], Rejection) and checked[4].reason == "invalid_json"


def test_a_record_over_the_size_limit_is_refused_before_sending_with_the_limit() -> None:
    big = b'{"job_id":"big-1","tenant":"t","input":"' + b"x" * 1_100_000 + b'"}'
    ((_, _, checked),) = check_lines([(1, big)])
    assert isinstance(checked, Rejection) and checked.reason == "oversized"
    assert "limit is 1000000" in checked.error
    assert checked.dead_letter(big, "submit").job_id == "big-1"


def test_hostile_nesting_is_a_dead_letter_naming_the_field_and_the_limit() -> None:
    deep = b'{"job_id":"deep-1","tenant":"t","input":"x","params":{"json_schema":' + b'{"a":' * 5000
    deep += b"1" + b"}" * 5000 + b"}}"
    ((_, _, checked),) = check_lines([(1, deep)])
    assert isinstance(checked, Rejection)
    assert (checked.reason, checked.field) == ("too_deep", "params.json_schema") and "128" in checked.error
    assert checked.dead_letter(deep, "submit").job_id == "deep-1"
