"""Turns a WorkItem into the system prompt and messages a chat model gets."""

from __future__ import annotations

import orjson

from schemas import ChatMessage, TaskType, WorkItem

DEFAULT_INSTRUCTIONS = {
    TaskType.CLASSIFICATION: "Classify the input. Answer with exactly one of these labels: {labels}.",
    TaskType.EXTRACTION: "Extract the requested fields from the input as JSON matching this schema: {schema}.",
    TaskType.SUMMARISATION: "Summarise the input concisely.",
    TaskType.GENERATION: "Follow the user's request.",
    TaskType.OTHER: "Follow the user's request.",
}


def system_prompt(item: WorkItem, task_type: TaskType) -> str:
    explicit = [m.content for m in item.chat_messages() if m.role == "system"]
    template = item.params.instructions or DEFAULT_INSTRUCTIONS[task_type]
    labels = ", ".join(item.params.labels or [])
    schema = orjson.dumps(item.params.json_schema).decode() if item.params.json_schema else "{}"
    return "\n\n".join([template.replace("{labels}", labels).replace("{schema}", schema), *explicit])


def conversation(item: WorkItem) -> list[ChatMessage]:
    """The non-system messages, in order."""
    return [m for m in item.chat_messages() if m.role != "system"]
