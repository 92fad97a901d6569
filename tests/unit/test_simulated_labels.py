"""The simulator's classification answers: a consistent teacher that a student can learn, a weaker small model."""

from __future__ import annotations

import json
from pathlib import Path

from modelyard.local.simulated_labels import SimulatedClassifier, teacher_label

DATA = Path(__file__).resolve().parents[2] / "modelyard" / "data"
SMALL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def labelled_cases() -> list[tuple[str, list[str], str]]:
    cases = [json.loads(line) for line in (DATA / "eval_cases.jsonl").read_text().splitlines()]
    return [
        (c["item"]["input"], c["item"]["params"]["labels"], c["expected"])
        for c in cases
        if c["item"]["params"].get("labels")
    ]


def test_the_teacher_is_a_fixed_function_of_the_words_and_mostly_right() -> None:
    cases = labelled_cases()
    right = sum(teacher_label(text, labels) == want for text, labels, want in cases)
    assert right / len(cases) >= 0.95
    assert teacher_label("I was charged twice, invoice 123", ["billing", "bug"]) == "billing"
    # numbers and word order do not matter; the words do
    assert teacher_label("invoice 999: charged twice", ["billing", "bug"]) == teacher_label(
        "charged twice invoice", ["billing", "bug"]
    )
    assert teacher_label("the app crashes with an error", ["billing", "bug"]) == "bug"


def test_frontier_models_answer_as_the_teacher_small_models_on_part_of_the_items() -> None:
    classifier = SimulatedClassifier(frozenset({SMALL}), 0.7)
    cases = labelled_cases()
    frontier = [classifier.answer(text, labels, "claude-sonnet-5") for text, labels, _ in cases]
    small = [classifier.answer(text, labels, SMALL) for text, labels, _ in cases]
    teacher = [teacher_label(text, labels) for text, labels, _ in cases]
    assert [label for label, _ in frontier] == teacher
    agree = [label == want for (label, _), want in zip(small, teacher, strict=False)]
    assert 0.6 <= sum(agree) / len(agree) <= 0.8
    right_conf = [c for (_, c), ok in zip(small, agree, strict=False) if ok]
    wrong_conf = [c for (_, c), ok in zip(small, agree, strict=False) if not ok]
    assert sum(wrong_conf) / len(wrong_conf) < sum(right_conf) / len(
        right_conf
    )  # a cascade can catch mistakes
    assert min(c for _, c in frontier + small) >= 0.35  # the floor the cascade tests rely on
