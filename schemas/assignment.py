"""Assignment: a validated WorkItem the router has tagged and sent to one pool's topic."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.cache import CacheDirective
from schemas.work_item import TaskType, WorkItem


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    item: WorkItem
    task_type: TaskType
    task_reason: str = Field(
        max_length=500, description="Why this task type (hint, or the rule that inferred it)."
    )
    pool: str = Field(min_length=1, max_length=64)
    rule: str = Field(default="", max_length=100, description="Name of the rule that chose the pool.")
    reason: str = Field(max_length=500, description="Why that rule chose the pool.")
    novelty_score: float | None = Field(
        default=None, ge=0, le=1, description="1 - cosine to the task's centroid."
    )
    input_tokens_est: int = Field(default=0, ge=0)
    attempt: int = Field(default=1, ge=1)
    reserved_usd: Decimal = Field(
        default=Decimal(0),
        ge=0,
        description="Estimated cost of this pool's call, reserved against the tenant's budget when it was "
        "routed (0: no budget guards it); the sink settles it by the real cost once the result is priced.",
    )
    routed_at: AwareDatetime
    cache: CacheDirective | None = Field(
        default=None,
        description="Set when the routing policy opts this tenant and task into the result cache.",
    )
