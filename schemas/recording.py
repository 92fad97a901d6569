"""Recordings: what real models answered to a set of items, read back by the `replay` provider and the router fit.

One JSONL line per item. The project's own shape (every field but `answers`/`expected` optional):

    {"id": "mmlu-17",                                  # looked up by job id (or a metadata key); optional
     "input": "Find the index of <p> in S_5 ...",      # the prompt: a string or chat messages; or "item": a WorkItem
     "expected": "B",                                  # the right answer, when known
     "labels": ["A", "B", "C", "D"],                   # the label set, when the task is classification
     "category": "abstract_algebra",                   # any grouping key (MMLU subject, intent family...)
     "answers": {                                      # per model: its recorded output and/or its 0..1 score
        "gpt-4-1106-preview": {"output": "B", "score": 1, "input_tokens": 48, "output_tokens": 1},
        "mistralai/Mixtral-8x7B-Instruct-v0.1": {"score": 0}}}

Two foreign shapes are read as they are published:

* recorded (RouteLLM's MMLU responses): `{"prompt", "category", "scores": {model: 0 | 1}}`: a score per model,
  no output, no expected answer;
* labelled (Banking77, SMS spam): `{"text", "label"}` (an extra `split` is kept): the expected answer only.
  The replay provider then acts as a labelled teacher (see `workers/pools/backends/replay.py`).

A model with only a score "answers" the expected answer when its score is >= 0.5 and a wrong one otherwise; an
item with no expected answer (RouteLLM's) uses the placeholders RECORDED_RIGHT / RECORDED_WRONG, and eval cases
built from such a recording expect RECORDED_RIGHT, so `modelyard eval` scores replayed answers exactly as the
recording scored the real ones. Token counts are used when recorded, else estimated by a real tokenizer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.work_item import ChatMessage, WorkItem

RECORDED_RIGHT = "recorded:right"
RECORDED_WRONG = "recorded:wrong"
Shape = Literal["recording", "recorded", "labelled"]


class RecordedAnswer(BaseModel):
    """One model's recorded answer to one item: its output, its score, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str | None = None
    score: float | None = Field(
        default=None, ge=0, le=1, description="1 right, 0 wrong; partial credit between."
    )
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _says_something(self) -> RecordedAnswer:
        if self.output is None and self.score is None:
            raise ValueError("a recorded answer needs an output, a score or both")
        return self

    @property
    def right(self) -> bool | None:
        return None if self.score is None else self.score >= 0.5


class Recording(BaseModel):
    """One recorded item (the project's own JSONL shape; see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    input: Annotated[str, Field(min_length=1)] | Annotated[list[ChatMessage], Field(min_length=1)] | None = (
        None
    )
    item: WorkItem | None = Field(default=None, description="A whole work item instead of `input`.")
    expected: Any = None
    labels: list[str] | None = None
    category: str | None = None
    split: str | None = None
    answers: dict[str, RecordedAnswer] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_input(self) -> Recording:
        if (self.input is None) == (self.item is None):
            raise ValueError("a recording needs exactly one of `input` and `item`")
        if not self.answers and self.expected is None:
            raise ValueError("a recording needs `answers`, `expected` or both")
        return self

    def text(self) -> str:
        """The input flattened to text, as WorkItem.input_text() flattens it."""
        if self.item is not None:
            return self.item.input_text()
        if isinstance(self.input, str):
            return self.input
        return "\n".join(message.content for message in self.input or [])

    def expected_answer(self) -> str:
        """The answer a right model gives: `expected`, or RECORDED_RIGHT when only scores were recorded."""
        return RECORDED_RIGHT if self.expected is None else str(self.expected)

    def label_set(self) -> list[str] | None:
        if self.labels:
            return self.labels
        return self.item.params.labels if self.item is not None else None


def shape_of(data: dict[str, Any]) -> Shape:
    """Which of the three shapes a decoded line has."""
    if "scores" in data and "prompt" in data:
        return "recorded"
    if "text" in data and "label" in data and "answers" not in data:
        return "labelled"
    return "recording"


def parse_recording(data: Any) -> Recording:
    """One decoded JSONL line in any of the three shapes; raises ValueError naming the field that is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"a recording line is a JSON object, not {type(data).__name__}")
    shape = shape_of(data)
    try:
        if shape == "recorded":
            return _from_recorded(data)
        if shape == "labelled":
            return _from_labelled(data)
        return Recording.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        raise ValueError(f"{where}: {first['msg']} ({shape} shape)") from exc


def _from_recorded(data: dict[str, Any]) -> Recording:
    unknown = sorted(set(data) - {"prompt", "category", "scores", "id"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field in a recorded {{prompt, category, scores}} line")
    scores = data["scores"]
    if not isinstance(scores, dict) or not scores:
        raise ValueError("scores: a non-empty object of model -> 0/1 score")
    answers = {str(model): {"score": score} for model, score in scores.items()}
    return Recording.model_validate(
        {"id": data.get("id"), "input": data["prompt"], "category": data.get("category"), "answers": answers}
    )


def _from_labelled(data: dict[str, Any]) -> Recording:
    unknown = sorted(set(data) - {"text", "label", "split", "id", "category"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field in a labelled {{text, label}} line")
    if not isinstance(data["label"], str) or not data["label"]:
        raise ValueError("label: a non-empty string")
    fields = {
        "id": data.get("id"),
        "input": data["text"],
        "expected": data["label"],
        "split": data.get("split"),
        "category": data.get("category"),
    }
    return Recording.model_validate(fields)
