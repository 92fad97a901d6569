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
