"""The CPU student: trains on (text, label), answers within the item's label set, saves without pickles."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core._exceptions import ConfigError
from modelyard.local.simulated_labels import teacher_label
from workers.pools.model_registry import ModelRegistry
from workers.pools.student import StudentModel

TICKETS = ["billing", "bug", "account"]
WORDS = {
    "billing": ["charged twice", "refund my invoice", "card declined"],
    "bug": ["app crashes", "error on upload", "blank page"],
    "account": ["reset my password", "invite a teammate", "delete my account"],
}


def texts() -> list[str]:
    return [
        f"{opener} {phrase} {n}"
        for n in range(6)
        for words in WORDS.values()
        for phrase in words
        for opener in ("Hi,", "Urgent:")
    ]


def test_student_learns_the_teacher_and_respects_the_label_set(tmp_path: Path) -> None:
    data = texts()
    student = StudentModel.train(data, [teacher_label(t, TICKETS) for t in data])
    assert student.agreement(["my card was charged twice"], [TICKETS], ["billing"]) == 1.0
    only_two = student.predict(["my card was charged twice"], [["bug", "account"]])[0]
    assert only_two is not None and only_two.label in {"bug", "account"} and 0.5 <= only_two.confidence <= 1
    assert student.predict(["anything"], [["positive", "negative"]]) == [None]  # knows none of these labels
    registry = ModelRegistry(tmp_path)
    first = registry.register(
        student, "classification", len(data), 0, 1.0, 0.95, __import__("datetime").datetime.now()
    )
    second = registry.register(
        student, "classification", len(data), 0, 1.0, 0.95, __import__("datetime").datetime.now()
    )
    assert (first.version, second.version, registry.current_version("classification")) == ("v1", "v2", "v2")
    version, loaded = registry.load_current("classification")
    assert version == "v2" and not list((tmp_path / "classification" / "v2").glob("*.pkl"))
    assert loaded.predict(["reset my password please"], [TICKETS]) == student.predict(
        ["reset my password please"], [TICKETS]
    )


def test_a_broken_model_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.npz").write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="cannot load the student model"):
        StudentModel.load(tmp_path)
    with pytest.raises(ConfigError, match="at least 2"):
        StudentModel.train(["a", "b"], ["x", "x"])
