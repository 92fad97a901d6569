"""The replay provider: answers found by metadata key, job id or text; recorded scores become right or wrong
answers; a labelled teacher is right at its configured rate, the same way every time for a job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from modelyard.core._exceptions import InvalidInput, ProviderError
from modelyard.core.settings import ProviderSettings
from schemas import TaskType, WorkItem
from schemas.recording import RECORDED_RIGHT, RECORDED_WRONG
from workers.pools.backends.replay import RecordingIndex, ReplayBackend, read_recordings
from workers.pools.token_counts import TokenCounter

DATA = Path(__file__).resolve().parent.parent / "data"
MMLU, BANKING = DATA / "routellm-mmlu-sample.jsonl", DATA / "banking77-sample.jsonl"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def backend(path: Path, model: str, **config: object) -> ReplayBackend:
    return ReplayBackend("replay", ProviderSettings(api="replay", recording=path, **config), model)


def answer(b: ReplayBackend, item: WorkItem) -> object:
    return asyncio.run(b.complete(item, TaskType.OTHER))


def test_recorded_scores_become_right_and_wrong_answers_with_real_token_counts() -> None:
    strong, weak = backend(MMLU, STRONG), backend(MMLU, WEAK)
    counter = TokenCounter()
    for n, line in enumerate(lines(MMLU)[:40]):
        # the text as a producer would send it: other whitespace and case find the same line
        item = WorkItem(
            job_id=f"j{n}", tenant="acme", input="  " + line["prompt"].upper().replace("\n", " \n ")
        )
        for b, model in ((strong, STRONG), (weak, WEAK)):
            done = answer(b, item)
            assert done.output == (RECORDED_RIGHT if line["scores"][model] else RECORDED_WRONG)
            assert done.model == model
            assert (
                done.usage.input_tokens == counter.count(item.input_text()) > 0
                and done.usage.output_tokens >= 1
            )


def test_lookup_by_metadata_key_and_job_id_before_text() -> None:
    recordings = [
        {"id": "a", "input": "same text", "answers": {"m": {"output": "from a"}}},
        {
            "id": "b",
            "input": "other text",
            "answers": {"m": {"output": "from b", "input_tokens": 7, "output_tokens": 2}},
        },
    ]
    path = Path(__file__).parent / "replay-lookup.jsonl"
    index = RecordingIndex([*map(_parse, recordings)], "inline")
    b = ReplayBackend("replay", ProviderSettings(api="replay", recording=path), "m", index=index)
    assert answer(b, WorkItem(job_id="x", tenant="t", input="same text")).output == "from a"
    assert answer(b, WorkItem(job_id="b", tenant="t", input="same text")).output == "from b"
    by_key = answer(b, WorkItem(job_id="x", tenant="t", input="same text", metadata={"recording_id": "b"}))
    assert by_key.output == "from b" and (by_key.usage.input_tokens, by_key.usage.output_tokens) == (7, 2)


def _parse(line: dict):
    from schemas.recording import parse_recording

    return parse_recording(line)


def test_an_item_not_in_the_recording_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="not in the recording") as caught:
        answer(backend(MMLU, STRONG), WorkItem(job_id="nope", tenant="acme", input="never recorded"))
    assert not caught.value.retryable


def test_a_model_the_recording_lacks_is_named() -> None:
    item = WorkItem(job_id="j", tenant="acme", input=lines(MMLU)[0]["prompt"])
    with pytest.raises(ProviderError, match="no answer of claude-sonnet-5"):
        answer(backend(MMLU, "claude-sonnet-5"), item)


def test_labelled_teacher_is_right_at_its_rate_and_the_same_for_a_job() -> None:
    rows = lines(BANKING)
    labels = sorted({r["label"] for r in rows})
    teacher = backend(BANKING, "claude-sonnet-5", teacher_accuracy=0.8)
    right, wrong_labels, asked = 0, set(), 0
    for n, row in enumerate(rows * 10):
        item = WorkItem(job_id=f"bank-{n}", tenant="acme", input=row["text"], params={"labels": labels})
        output = answer(teacher, item).output
        assert output == answer(teacher, item).output  # deterministic per job
        right, asked = right + (output == row["label"]), asked + 1
        if output != row["label"]:
            wrong_labels.add(output)
    assert 0.77 <= right / asked <= 0.83, right / asked  # 2,000 draws: 3.4 standard deviations either side
    assert wrong_labels and wrong_labels <= set(labels)
    perfect = backend(BANKING, "claude-sonnet-5")
    assert all(
        answer(perfect, WorkItem(job_id=f"p{n}", tenant="a", input=r["text"])).output == r["label"]
        for n, r in enumerate(rows[:30])
    )


def test_a_bad_line_names_its_number_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"prompt": "x", "scores": {"m": 1}, "typo": 1}\n')
    with pytest.raises(InvalidInput, match=r"bad.jsonl:2: typo") as caught:
        list(read_recordings(path))
    assert caught.value.field == "typo"
