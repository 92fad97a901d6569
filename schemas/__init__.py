"""Wire models (pydantic v2; msgspec ResultStruct, the sink's fast path for Result) and ClickHouse migrations.
Imports nothing else of modelyard."""

from schemas.assignment import Assignment
from schemas.dead_letter import DeadLetter
from schemas.rejection import Rejection
from schemas.result import AnyResult, Result, ResultStatus, ResultStruct, Usage
from schemas.work_item import ChatMessage, TaskParams, TaskType, WorkItem

SCHEMAS = {
    "work-item": WorkItem,
    "assignment": Assignment,
    "result": Result,
    "dead-letter": DeadLetter,
}

__all__ = [
    "SCHEMAS",
    "AnyResult",
    "Assignment",
    "ChatMessage",
    "DeadLetter",
    "Rejection",
    "Result",
    "ResultStatus",
    "ResultStruct",
    "TaskParams",
    "TaskType",
    "Usage",
    "WorkItem",
]
