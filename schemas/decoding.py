"""Decode wire bytes once into a model, or say exactly why not (reason + offending field). Never raises."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Generic, TypeVar

import msgspec
from pydantic import BaseModel, ValidationError

from schemas.dead_letter import MAX_MESSAGE_BYTES
from schemas.rejection import Rejection

MAX_JSON_DEPTH = 128  # objects/arrays inside each other; checked before any parser recurses (msgspec and
# Python's recursion hit RecursionError in the thousands; pydantic's parser refuses past ~200)
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"(?:\s*:)?|[\[\]{}]')  # keys end with ':', strings do not
# The one time shape the msgspec fast paths read (plain RFC 3339), with datetime.fromisoformat: msgspec's own
# datetime rounds a fraction past microseconds where pydantic truncates, and fromisoformat alone reads shapes
# pydantic refuses (basic format, minute 60 in an offset; hour 24 on newer Pythons). Anything else: pydantic.
PLAIN_AWARE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
Model = TypeVar("Model", bound=BaseModel)
Fast = TypeVar("Fast", bound=msgspec.Struct)


def decode(model: type[Model], raw: bytes | None) -> Model | Rejection:
    """Parse and validate in one pass (pydantic-core's JSON parser)."""
    if not raw:
        return Rejection("empty", None, "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection("oversized", None, f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    too_deep = nesting_failure(raw)
    if too_deep is not None:
        return too_deep
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        return _json_rejection(exc) or describe(exc)


def nesting_failure(raw: bytes) -> Rejection | None:
    """A rejection when objects and arrays nest past MAX_JSON_DEPTH, naming the field where they do; found
    without recursing (two byte counts rule out almost every message before any scan)."""
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH:
        return None
    path: list[str] = []
    key = ""
    for match in _STRUCTURE.finditer(raw):
        token = match.group()
        if token[:1] == b'"':
            key = token.rstrip(b": \t\r\n")[1:-1].decode("utf-8", "replace") if token[-1:] == b":" else ""
        elif token in (b"{", b"["):
            path.append(key)
            key = ""
            if len(path) > MAX_JSON_DEPTH:
                field = ".".join(name for name in path[1:3] if name) or None
                why = f"nests deeper than {MAX_JSON_DEPTH} levels of objects and arrays (the limit)"
                return Rejection("too_deep", field, f"{field or 'message'} {why}")
        elif path:
            path.pop()
            key = ""
    return None


class StructFirst(Generic[Fast, Model]):
    """Decode with a msgspec Struct that accepts a subset of what `model` accepts, to equal values (several
    times faster); whatever it refuses goes to `decode(model, ...)`, so pydantic still gives every verdict."""

    def __init__(self, struct: type[Fast], model: type[Model]) -> None:
        self._fast = msgspec.json.Decoder(struct).decode
        self.model = model

    def __call__(self, raw: bytes | None) -> Fast | Model | Rejection:
        if raw and len(raw) <= MAX_MESSAGE_BYTES and nesting_failure(raw) is None:
            try:
                return self._fast(raw)
            except (msgspec.MsgspecError, ValueError):  # ValueError: bytes that are not UTF-8
                pass
        return decode(self.model, raw)


def plain_aware_datetime(text: str, field: str) -> datetime:
    """`text` as an aware datetime when it is plain RFC 3339; ValueError otherwise (the struct then refuses)."""
    if PLAIN_AWARE_TIME(text) is None:
        raise ValueError(f"{field} is not plain RFC 3339")
    return datetime.fromisoformat(text)


def _json_rejection(exc: ValidationError) -> Rejection | None:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return Rejection("invalid_json", None, f"not valid JSON: {first['msg']}")
    if first["type"] == "model_type":
        return Rejection("invalid_json", None, "expected a JSON object")
    return None


def validate(model: type[Model], data: dict[str, object]) -> Model | Rejection:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return describe(exc)


def describe(exc: ValidationError) -> Rejection:
    """The most specific error, its field as a dotted path (union branch names left out).

    Model-level validators start their message with the field they blame ("params.labels is ...")."""
    errors = exc.errors(include_url=False)
    first = max(errors, key=lambda e: len(e["loc"]))
    parts = [str(p) for p in first["loc"] if not _is_union_tag(p)]
    message = str(first["msg"]).removeprefix("Value error, ")
    field = ".".join(parts) or _leading_field(message)
    reason = "unsupported_schema_version" if field == "schema_version" else "validation"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    text = message if not parts else f"{field}: {message}"
    return Rejection(reason, field, f"{text}{more}")


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (
        "[" in part or part.startswith(("constrained-", "function-")) or part in {"str", "list"}
    )


def _leading_field(message: str) -> str | None:
    word = message.split(" ", 1)[0]
    return word if word.replace(".", "").replace("_", "").isalnum() and "." in word else None
