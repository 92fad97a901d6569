"""Evaluation wire models: a labelled case, and the score of one pool's answer to it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.work_item import TaskType, WorkItem


class EvalCase(BaseModel):
    """One line of an eval dataset: the work item and the answer it should get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: WorkItem
    expected: Any = Field(description="The label, the expected JSON object, or a reference text.")


class EvalScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    run: str
    case_id: str
    job_id: str
    pool: str
    provider: str
    model: str
    task_type: TaskType
    status: str
    correct: bool
    score: float = Field(ge=0, le=1)
    confidence: float | None = None
    cost_usd: str = Field(description="Decimal as text, priced with the catalog the eval ran with.")
    latency_ms: float
    scored_at: AwareDatetime
