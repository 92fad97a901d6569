"""A local stand-in for hosted model APIs: OpenAI chat completions (as vLLM serves them) and Anthropic messages.

It speaks their HTTP wire protocols, so the real SDKs talk to it unchanged: usage fields (cached tokens
included), logprobs, structured outputs (vLLM's `structured_outputs`, OpenAI `response_format`, Anthropic
tool use), configurable latency, 429 with Retry-After, 5xx and outage windows. Faults can be changed at run
time with POST /_sim/faults; GET /_sim/stats counts what was served.

Fault settings (POST /_sim/faults with any of them):
  latency_ms, jitter_ms      uniform latency (latency +- jitter)
  latency_sigma              > 0: lognormal latency instead, median latency_ms, this sigma (heavy tail)
  rate_429, rate_5xx         fraction of requests answered 429 (with Retry-After) / 500
  retry_after_s              the Retry-After sent with 429s
  outage_s                   every request answers 503 for this many seconds from now
  storm_429_s                every request answers 429 for this many seconds from now
  timeout_rate, hang_s       fraction of requests that hang hang_s before answering (client timeouts)
  fault_model                when set, failures (not latency) hit only requests for this model
  low_confidence_marker      when set, prompts containing it get confidence 0.05 (cascade tests)
  batch_delay_s              how long a batch (OpenAI Batch, Anthropic Message Batches) takes to end
  batch_error_marker         when set, batch requests containing it fail with HTTP batch_error_status (500)
  batch_error_rate           fraction of the other batch requests that fail the same way
The batch endpoints are in modelyard/simulator_batches.py.

Classification answers come from modelyard.local.simulated_labels: frontier models answer as a consistent teacher
(keyword evidence, learnable), the models in `simulator.small_models` agree with it on only part of the items.
Other answers (extraction, free text) are a hash of the prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import SimulatorSettings
from modelyard.local.simulated_labels import SimulatedClassifier
from modelyard.local.simulator_batches import BatchSimulator

CACHEABLE_PREFIX_TOKENS = 256


def count_tokens(text: str) -> int:
    """About four characters a token, as providers' tokenizers average on English."""
    return max(1, math.ceil(len(text) / 4))


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class Faults:
    latency_ms: float
    jitter_ms: float
    rate_429: float
    rate_5xx: float
    retry_after_s: float
    latency_sigma: float = 0.0
    timeout_rate: float = 0.0
    hang_s: float = 30.0
    fault_model: str = ""
    low_confidence_marker: str = ""
    batch_delay_s: float = 1.0
    batch_error_marker: str = ""
    batch_error_rate: float = 0.0
    batch_error_status: int = 500
    outage_until: float = 0.0
    storm_429_until: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        changes = dict(changes)
        if "outage_s" in changes:
            self.outage_until = time.monotonic() + float(changes.pop("outage_s"))
        if "storm_429_s" in changes:
            self.storm_429_until = time.monotonic() + float(changes.pop("storm_429_s"))
        for name, value in changes.items():
            if not hasattr(self, name) or name.endswith("_until"):
                raise web.HTTPBadRequest(text=f"unknown fault setting {name!r}")
            setattr(self, name, type(getattr(self, name))(value))

    def applies_to(self, model: str) -> bool:
        return not self.fault_model or self.fault_model == model


@dataclass
class Answer:
    text: str | None
    tool_input: dict[str, Any] | None
    confidence: float


@dataclass
class ProviderSimulator:
    settings: SimulatorSettings
    faults: Faults = field(init=False)
    stats: Counter[str] = field(default_factory=Counter)
    seen_prefixes: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        s = self.settings
        self.faults = Faults(
            s.latency_ms, s.jitter_ms, s.rate_429, s.rate_5xx, s.retry_after_s, batch_delay_s=s.batch_delay_s
        )
        self.random = random.Random(s.seed)
        gold = read_gold_labels(s.gold_labels) if s.gold_labels else {}
        self.classifier = SimulatedClassifier(frozenset(s.small_models), s.small_model_accuracy, gold)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        self.batch_api = BatchSimulator(self)
        app.add_routes(
            [
                web.post("/v1/chat/completions", self.openai_chat),
                web.post("/v1/messages", self.anthropic_messages),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.post("/_sim/faults", self.set_faults),
                web.get("/_sim/stats", self.get_stats),
                *self.batch_api.routes(),
            ]
        )
        return app

    # -- fault injection -------------------------------------------------------------------------
    async def _delay_or_fail(self, api: str, model: str) -> web.Response | None:
        f = self.faults
        await asyncio.sleep(self._latency_s())
        if not f.applies_to(model):
            return None
        now = time.monotonic()
        if now < f.outage_until:
            return self._error(
                api, 503, "overloaded_error" if api == "anthropic" else "server_error", "outage"
            )
        if now < f.storm_429_until:
            return self._error(
                api, 429, "rate_limit_error", "rate limited (storm)", retry_after=f.retry_after_s
            )
        if f.timeout_rate and self.random.random() < f.timeout_rate:
            self.stats[f"{api}.hung"] += 1
            await asyncio.sleep(f.hang_s)
        roll = self.random.random()
        if roll < f.rate_429:
            return self._error(api, 429, "rate_limit_error", "rate limited", retry_after=f.retry_after_s)
        if roll < f.rate_429 + f.rate_5xx:
            return self._error(
                api, 500, "api_error" if api == "anthropic" else "server_error", "internal error"
            )
        return None

    def _latency_s(self) -> float:
        f = self.faults
        if f.latency_sigma > 0:
            return self.random.lognormvariate(math.log(max(f.latency_ms, 0.001)), f.latency_sigma) / 1000
        return max(0.0, f.latency_ms + self.random.uniform(-f.jitter_ms, f.jitter_ms)) / 1000

    def _error(
        self, api: str, status: int, kind: str, message: str, retry_after: float | None = None
    ) -> web.Response:
        self.stats[f"{api}.{status}"] += 1
        headers = (
            {"retry-after": f"{retry_after:g}", "retry-after-ms": str(int(retry_after * 1000))}
            if retry_after
            else {}
        )
        body = (
            {"type": "error", "error": {"type": kind, "message": message}}
            if api == "anthropic"
            else {"error": {"message": message, "type": kind, "code": kind, "param": None}}
        )
        return web.json_response(
            body, status=status, headers=headers, dumps=lambda o: orjson.dumps(o).decode()
        )

    # -- OpenAI / vLLM ------------------------------------------------------------------------------
    async def openai_chat(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return self._error("openai", 401, "invalid_api_key", "missing bearer token")
        body, problem = await _request_body(request, _openai_schema)
        if problem:
            return self._error("openai", 400, "invalid_request_error", problem)
        if failure := await self._delay_or_fail("openai", str(body.get("model", ""))):
            return failure
        self.stats["openai.200"] += 1
        return _json(self.openai_completion(body))

    def openai_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat.completion object answering `body` (no latency, no faults)."""
        messages = body.get("messages", [])
        prompt = "\n".join(_content_text(m.get("content")) for m in messages)
        answer = self._answer(prompt, _user_text(messages), _openai_choices(body), _openai_schema(body), body)
        prompt_tokens, cached = self._prompt_tokens("openai", body.get("messages", []))
        text = answer.text if answer.text is not None else orjson.dumps(answer.tool_input).decode()
        completion_tokens = count_tokens(text)
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": text},
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": _logprobs(text, answer.confidence)}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }

    # -- Anthropic --------------------------------------------------------------------------------
    async def anthropic_messages(self, request: web.Request) -> web.Response:
        if not (
            request.headers.get("x-api-key") or request.headers.get("Authorization", "").startswith("Bearer ")
        ):
            return self._error("anthropic", 401, "authentication_error", "missing x-api-key or bearer token")
        body, problem = await _request_body(request, _anthropic_schema)
        if problem:
            return self._error("anthropic", 400, "invalid_request_error", problem)
        if failure := await self._delay_or_fail("anthropic", str(body.get("model", ""))):
            return failure
        self.stats["anthropic.200"] += 1
        return _json(self.anthropic_message(body))

    def anthropic_message(self, body: dict[str, Any]) -> dict[str, Any]:
        """The message object answering `body` (no latency, no faults)."""
        messages = (
            [{"role": "system", "content": _content_text(body.get("system"))}] if body.get("system") else []
        )
        messages += body.get("messages", [])
        prompt = "\n".join(_content_text(m.get("content")) for m in messages)
        tool = _anthropic_tool(body)
        answer = self._answer(
            prompt, _user_text(messages), None, tool["input_schema"] if tool else None, body
        )
        prompt_tokens, cached = self._prompt_tokens("anthropic", messages)
        if tool:
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": tool["name"],
                    "input": answer.tool_input,
                }
            ]
            out_tokens, stop = count_tokens(orjson.dumps(answer.tool_input).decode()), "tool_use"
        else:
            content = [{"type": "text", "text": answer.text}]
            out_tokens, stop = count_tokens(answer.text or ""), "end_turn"
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "unknown"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_tokens - cached,
                "output_tokens": out_tokens,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0,
            },
        }

    # -- shared ------------------------------------------------------------------------------------
    def _answer(
        self,
        prompt: str,
        user_text: str,
        choices: list[str] | None,
        schema: dict[str, Any] | None,
        body: dict[str, Any],
    ) -> Answer:
        digest = _digest(prompt)
        confidence = 0.35 + 0.65 * ((digest >> 16) % 1000) / 1000
        labels = choices or _label_enum(schema)
        if labels:
            label, confidence = self.classifier.answer(user_text, labels, str(body.get("model", "")))
        if self.faults.low_confidence_marker and self.faults.low_confidence_marker in prompt:
            confidence = 0.05
        if labels:
            return Answer(label, None, confidence) if choices else Answer(None, {"label": label}, confidence)
        if schema is not None:
            return Answer(None, sample_for_schema(schema, digest), confidence)
        budget = int(body.get("max_tokens") or body.get("max_completion_tokens") or 64)
        words = prompt.split()[: max(1, min(budget, 48) - 3)]
        return Answer("Simulated answer: " + " ".join(words), None, confidence)

    def _prompt_tokens(self, api: str, messages: list[dict[str, Any]]) -> tuple[int, int]:
        """Total prompt tokens, and how many of them a repeated system prefix serves from this API's cache."""
        total = sum(count_tokens(_content_text(m.get("content"))) for m in messages)
        system = next((_content_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
        prefix_tokens = count_tokens(system) if system else 0
        if prefix_tokens < CACHEABLE_PREFIX_TOKENS:
            return total, 0
        key = _digest(api + system)
        cached = prefix_tokens if key in self.seen_prefixes else 0
        self.seen_prefixes.add(key)
        return total, cached

    async def models(self, request: web.Request) -> web.Response:
        return _json(
            {"object": "list", "data": [{"id": "simulated", "object": "model", "owned_by": "modelyard"}]}
        )

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def set_faults(self, request: web.Request) -> web.Response:
        self.faults.update(orjson.loads(await request.read()))
        return _json({"faults": self.faults.__dict__})

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(dict(self.stats))


def sample_for_schema(schema: dict[str, Any], seed: int) -> Any:
    """A deterministic value that satisfies a simple JSON schema (objects, arrays, enums, scalars)."""
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample_for_schema(sub, seed >> 3) for name, sub in props.items()}
    if kind == "array":
        return [sample_for_schema(schema.get("items", {"type": "string"}), seed)]
    return {
        "string": "sample",
        "integer": seed % 100,
        "number": (seed % 1000) / 10,
        "boolean": bool(seed & 1),
    }.get(kind)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))


def _user_text(messages: list[dict[str, Any]]) -> str:
    """What the model is asked about: the non-system messages (instructions are the same for every item)."""
    return "\n".join(_content_text(m.get("content")) for m in messages if m.get("role") != "system")


def read_gold_labels(path: Path) -> dict[str, str]:
    """text -> label of a labelled JSONL; a line without string text and label is an error naming it."""
    gold = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            row = orjson.loads(line) if line.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"simulator.gold_labels {path}:{number}: not JSON: {exc}") from exc
        if row and not (isinstance(row.get("text"), str) and isinstance(row.get("label"), str)):
            raise ConfigError(f"simulator.gold_labels {path}:{number}: needs string fields text and label")
        if row:
            gold[row["text"]] = row["label"]
    return gold


def _label_enum(schema: dict[str, Any] | None) -> list[str] | None:
    """The labels of a classification answer schema ({"label": {"enum": [...]}}), else None."""
    properties = (schema or {}).get("properties") or {}
    if set(properties) != {"label"}:
        return None
    return properties["label"].get("enum") or None


def _openai_choices(body: dict[str, Any]) -> list[str] | None:
    structured = body.get("structured_outputs") or {}
    return structured.get("choice") or body.get("guided_choice")


def _openai_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    structured = body.get("structured_outputs") or {}
    if structured.get("json"):
        return structured["json"]
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"].get("schema", {})
    return None


def _anthropic_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice") or {}
    if choice.get("type") != "tool":
        return None
    return next((t for t in body.get("tools", []) if t.get("name") == choice.get("name")), None)


def _anthropic_schema(body: dict[str, Any]) -> Any:
    tool = _anthropic_tool(body)
    return tool.get("input_schema") if tool else None


JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
MAX_SCHEMA_NESTING = 32


async def _request_body(request: web.Request, schema_of: Any) -> tuple[dict[str, Any], str | None]:
    """The JSON body and, as the real APIs answer with HTTP 400, what is wrong with it or its schema."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return {}, f"We could not parse the JSON body of your request: {exc}"
    if not isinstance(body, dict):
        return {}, "The request body must be a JSON object"
    try:
        schema = schema_of(body)
    except (AttributeError, TypeError) as exc:
        return body, f"Invalid request shape: {exc}"
    return body, None if schema is None else schema_problem(schema, "schema", 0)


def schema_problem(schema: Any, where: str, depth: int) -> str | None:
    """The first thing the simulated APIs refuse in a JSON schema (a shape they cannot answer), else None."""
    if depth > MAX_SCHEMA_NESTING:
        return f"Invalid schema: {where} nests deeper than {MAX_SCHEMA_NESTING} levels"
    if not isinstance(schema, dict):
        return f"Invalid schema: {where} must be an object, not {type(schema).__name__}"
    kind = schema.get("type", "object")
    if kind not in JSON_TYPES:
        return f"Invalid schema: {where}.type {kind!r} is not a JSON type"
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        return f"Invalid schema: {where}.enum must be a non-empty array"
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return f"Invalid schema: {where}.properties must be an object"
    children = [(f"{where}.properties.{name}", sub) for name, sub in properties.items()]
    if "items" in schema:
        children.append((f"{where}.items", schema["items"]))
    return next(filter(None, (schema_problem(s, w, depth + 1) for w, s in children)), None)


def _logprobs(text: str, confidence: float) -> list[dict[str, Any]]:
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)] or [text]
    first = math.log(confidence)
    return [
        {"token": p, "logprob": first if i == 0 else -0.01, "bytes": None, "top_logprobs": []}
        for i, p in enumerate(pieces)
    ]


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def serve(settings: SimulatorSettings) -> None:
    """Run the simulator until interrupted (the `modelyard simulator` command)."""
    web.run_app(
        ProviderSimulator(settings).app(), host=settings.host, port=settings.port, print=None, access_log=None
    )
