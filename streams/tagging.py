"""Task tagging: the item's hint when given, otherwise rules over its shape, then over its wording."""

from __future__ import annotations

import re

from schemas import TaskType, WorkItem
from schemas.work_item_struct import WorkItemStruct

KEYWORD_RULES: tuple[tuple[TaskType, re.Pattern[str]], ...] = (
    (TaskType.SUMMARISATION, re.compile(r"\b(summari[sz]e|summary|tl;?dr|condense|key points)\b", re.I)),
    (TaskType.EXTRACTION, re.compile(r"\b(extract|pull out|parse out|fill in the fields)\b", re.I)),
    (TaskType.CLASSIFICATION, re.compile(r"\b(classify|categori[sz]e|which category|sentiment of)\b", re.I)),
    (TaskType.GENERATION, re.compile(r"\b(write|draft|compose|generate|suggest|create|rewrite)\b", re.I)),
)
SCAN_CHARS = 400


def tag_task(item: WorkItem | WorkItemStruct) -> tuple[TaskType, str]:
    """(task type, why)."""
    if item.task is not None:
        return item.task, "hint"
    if item.params.labels:
        return TaskType.CLASSIFICATION, "shape: params.labels present"
    if item.params.json_schema:
        return TaskType.EXTRACTION, "shape: params.json_schema present"
    text = _instruction_text(item)
    for task, pattern in KEYWORD_RULES:
        found = pattern.search(text)
        if found:
            return task, f"wording: {found.group(0).lower()!r}"
    return TaskType.OTHER, "no hint, shape or wording matched"


def _instruction_text(item: WorkItem | WorkItemStruct) -> str:
    """Where the ask usually is: the instructions and the start of the last user message."""
    user = [m.content for m in item.chat_messages() if m.role == "user"]
    return f"{item.params.instructions or ''}\n{(user[-1] if user else '')[:SCAN_CHARS]}"
