"""Assignment: a validated WorkItem the router has tagged and sent to one pool's topic."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.work_item import TaskType, WorkItem


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    item: WorkItem
    task_type: TaskType
    task_reason: str = Field(max_length=500, description="Why this task type (hint, or the rule that inferred it).")
    pool: str = Field(min_length=1, max_length=64)
    reason: str = Field(max_length=500, description="Which routing rule chose the pool.")
    attempt: int = Field(default=1, ge=1)
    routed_at: AwareDatetime
