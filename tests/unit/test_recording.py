"""The recording format: the project's own shape and the two published shapes, read as they are."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.recording import RECORDED_RIGHT, Recording, parse_recording, shape_of

DATA = Path(__file__).resolve().parent.parent / "data"


def test_recorded_routellm_lines_become_scores_per_model() -> None:
    line = orjson.loads((DATA / "routellm-mmlu-sample.jsonl").read_bytes().splitlines()[0])
    recording = parse_recording(line)
    assert shape_of(line) == "recorded"
    assert recording.text() == line["prompt"] and recording.category == line["category"]
    assert {m: a.score for m, a in recording.answers.items()} == line["scores"]
    assert recording.expected is None and recording.expected_answer() == RECORDED_RIGHT


def test_labelled_lines_become_expected_answers() -> None:
    line = orjson.loads((DATA / "banking77-sample.jsonl").read_bytes().splitlines()[0])
    recording = parse_recording(line)
    assert shape_of(line) == "labelled"
    assert recording.expected == line["label"] and recording.split == line["split"] and not recording.answers


def test_own_shape_with_item_and_outputs() -> None:
    recording = parse_recording(
        {
            "id": "q-1",
            "item": {"job_id": "q-1", "tenant": "acme", "input": "2+2?", "params": {"labels": ["3", "4"]}},
            "expected": "4",
            "answers": {"big": {"output": "4", "input_tokens": 5, "output_tokens": 1}, "small": {"score": 0}},
        }
    )
    assert (
        isinstance(recording, Recording)
        and recording.text() == "2+2?"
        and recording.label_set() == ["3", "4"]
    )
    assert recording.answers["small"].right is False and recording.answers["big"].right is None


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"prompt": "x", "scores": {"m": 1}, "extra": 1}, "extra"),
        ({"text": "x", "label": 3}, "label"),
        ({"input": "x", "answers": {"m": {}}}, "answers.m"),
        ({"input": "x", "answers": {"m": {"score": 2}}}, "answers.m.score"),
        ({"input": "x"}, "line"),
        ({"input": "x", "expected": "a", "typo": 1}, "typo"),
    ],
)
def test_bad_lines_name_the_field(line: dict, field: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_recording(line)
    assert str(caught.value).startswith(field), caught.value
