"""Wire models (pydantic v2) and ClickHouse migrations. Imports nothing else of modelyard."""

from schemas.assignment import Assignment
from schemas.dead_letter import DeadLetter
from schemas.result import Result, ResultStatus, Usage
from schemas.work_item import ChatMessage, TaskParams, TaskType, WorkItem

SCHEMAS = {
    "work-item": WorkItem,
    "assignment": Assignment,
    "result": Result,
    "dead-letter": DeadLetter,
}

__all__ = [
    "SCHEMAS",
    "Assignment",
    "ChatMessage",
    "DeadLetter",
    "Result",
    "ResultStatus",
    "TaskParams",
    "TaskType",
    "Usage",
    "WorkItem",
]
