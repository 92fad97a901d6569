"""WorkItem: one unit of LLM work as producers put it on the jobs topic (schema_version 1)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_INPUT_CHARS = 200_000
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]


class TaskType(StrEnum):
    CLASSIFICATION = "classification"
    EXTRACTION = "extraction"
    SUMMARISATION = "summarisation"
    GENERATION = "generation"
    OTHER = "other"


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)


class TaskParams(WireModel):
    """What the task needs beyond its input: a label set, a JSON schema, an output budget."""

    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=2, max_length=1000, description="Allowed answers for classification."
    )
    json_schema: dict[str, Any] | None = Field(default=None, description="Output schema for extraction.")
    max_output_tokens: int | None = Field(default=None, ge=1, le=32_768)
    instructions: str | None = Field(
        default=None, max_length=20_000, description="Task instructions (system prompt)."
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels


class WorkItem(WireModel):
    """A job submitted to modelyard. Unknown fields are rejected so typos never pass silently."""

    schema_version: Literal[1] = 1
    job_id: Identifier
    tenant: Identifier
    task: TaskType | None = Field(default=None, description="Task hint; inferred by the router when absent.")
    input: (
        Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]
        | Annotated[list[ChatMessage], Field(min_length=1, max_length=500)]
    )
    params: TaskParams = TaskParams()
    priority: int = Field(default=5, ge=0, le=9, description="0 lowest, 9 highest.")
    deadline: AwareDatetime | None = None
    metadata: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=64
    )
    submitted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _params_fit_task(self) -> WorkItem:
        if self.task is TaskType.CLASSIFICATION and not self.params.labels:
            raise ValueError("params.labels is required when task is 'classification'")
        return self

    def input_text(self) -> str:
        """The input flattened to text (for token estimates and prompts)."""
        if isinstance(self.input, str):
            return self.input
        return "\n".join(message.content for message in self.input)

    def chat_messages(self) -> list[ChatMessage]:
        if isinstance(self.input, str):
            return [ChatMessage(role="user", content=self.input)]
        return list(self.input)

    @property
    def is_deferrable(self) -> bool:
        return self.deadline is None

    def with_submitted_at(self, at: datetime) -> WorkItem:
        return self if self.submitted_at else self.model_copy(update={"submitted_at": at})
