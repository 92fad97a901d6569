"""The simulator's batch APIs: OpenAI Files + Batch, Anthropic Message Batches, on their wire shapes.

OpenAI: POST /v1/files (multipart, purpose=batch, JSONL of {custom_id, method, url, body}), POST /v1/batches,
GET /v1/batches/{id}, POST /v1/batches/{id}/cancel, GET /v1/files/{id}/content (output and error JSONL).
Anthropic: POST /v1/messages/batches ({requests: [{custom_id, params}]}), GET /v1/messages/batches/{id},
GET /v1/messages/batches/{id}/results (JSONL), POST /v1/messages/batches/{id}/cancel.

Every request of a batch is answered as the interactive endpoint would (same usage), when the batch is
created; the batch reports them after `batch_delay_s`. Faults: requests whose body contains
`batch_error_marker`, and a `batch_error_rate` share of the others, fail with HTTP `batch_error_status`.
Cancelling a batch that has not finished cancels every request.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web

ANTHROPIC_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
COMPLETION_WINDOW_S = 24 * 3600


@dataclass
class SimulatedBatch:
    """One batch: each request's outcome ((custom_id, status code, body); None once cancelled)."""

    id: str
    created_at: float
    ready_at: float
    outcomes: list[tuple[str, int, dict[str, Any]]]
    cancelled_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.cancelled_at is not None or time.monotonic() >= self.ready_at

    def ended_at(self) -> float:
        return self.cancelled_at or self.ready_at


class SimulatorCore(Protocol):
    """What the batch endpoints use of the provider simulator that mounts them (it imports this module)."""

    faults: Any
    stats: Any

    def _error(self, api: str, status: int, kind: str, message: str) -> web.Response: ...

    async def _delay_or_fail(self, api: str, model: str) -> web.Response | None: ...


class BatchSimulator:
    def __init__(self, sim: SimulatorCore) -> None:
        self.sim = sim
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (filename, content)
        self.batches: dict[str, SimulatedBatch] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/files", self.openai_upload),
            web.get("/v1/files/{id}/content", self.openai_file_content),
            web.post("/v1/batches", self.openai_create),
            web.get("/v1/batches/{id}", self.openai_retrieve),
            web.post("/v1/batches/{id}/cancel", self.openai_cancel),
            web.post("/v1/messages/batches", self.anthropic_create),
            web.get("/v1/messages/batches/{id}", self.anthropic_retrieve),
            web.get("/v1/messages/batches/{id}/results", self.anthropic_results),
            web.post("/v1/messages/batches/{id}/cancel", self.anthropic_cancel),
        ]

    # -- shared ------------------------------------------------------------------------------------
    def _outcome(self, api: str, custom_id: str, body: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
        f, sim = self.sim.faults, self.sim
        marked = bool(f.batch_error_marker) and f.batch_error_marker.encode() in orjson.dumps(body)
        if marked or (f.batch_error_rate and sim.random.random() < f.batch_error_rate):
            sim.stats[f"{api}.batch_errored"] += 1
            return custom_id, f.batch_error_status, _error_body(api, f.batch_error_status)
        sim.stats[f"{api}.batch_succeeded"] += 1
        answer = sim.anthropic_message(body) if api == "anthropic" else sim.openai_completion(body)
        return custom_id, 200, answer

    def _new(self, prefix: str, outcomes: list[tuple[str, int, dict[str, Any]]]) -> SimulatedBatch:
        now = time.monotonic()
        batch = SimulatedBatch(
            f"{prefix}{uuid.uuid4().hex[:24]}", now, now + self.sim.faults.batch_delay_s, outcomes
        )
        self.batches[batch.id] = batch
        return batch

    def _batch(self, request: web.Request, prefix: str) -> SimulatedBatch:
        batch = self.batches.get(request.match_info["id"])
        if batch is None or not batch.id.startswith(prefix):
            raise _not_found(prefix, request.match_info["id"])
        return batch

    async def _gate(self, api: str, request: web.Request) -> web.Response | None:
        """Auth, latency and the interactive faults (outage, 429, 5xx) apply to batch calls too."""
        header = request.headers.get("x-api-key") if api == "anthropic" else None
        if not (header or request.headers.get("Authorization", "").startswith("Bearer ")):
            return self.sim._error(api, 401, "authentication_error", "missing credentials")
        return await self.sim._delay_or_fail(api, "")

    # -- OpenAI ------------------------------------------------------------------------------------
    async def openai_upload(self, request: web.Request) -> web.Response:
        if failure := await self._gate("openai", request):
            return failure
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return self.sim._error(
                "openai", 400, "invalid_request_error", "send purpose=batch and a JSONL file"
            )
        content = upload.file.read()
        file_id = self._store_file(upload.filename or "upload.jsonl", content)
        return _json(_file_object(file_id, upload.filename or "upload.jsonl", len(content), "batch"))

    def _store_file(self, name: str, content: bytes) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = (name, content)
        return file_id

    async def openai_file_content(self, request: web.Request) -> web.Response:
        if failure := await self._gate("openai", request):
            return failure
        found = self.files.get(request.match_info["id"])
        if found is None:
            raise _not_found("file-", request.match_info["id"])
        return web.Response(body=found[1], content_type="application/octet-stream")

    async def openai_create(self, request: web.Request) -> web.Response:
        if failure := await self._gate("openai", request):
            return failure
        body = orjson.loads(await request.read())
        found = self.files.get(str(body.get("input_file_id")))
        if found is None or body.get("completion_window") != "24h":
            return self.sim._error(
                "openai", 400, "invalid_request_error", "unknown input_file_id or completion_window != 24h"
            )
        lines = [orjson.loads(line) for line in found[1].splitlines() if line.strip()]
        problem = _openai_line_problem(lines, str(body.get("endpoint")))
        outcomes = (
            [] if problem else [self._outcome("openai", line["custom_id"], line["body"]) for line in lines]
        )
        batch = self._new("batch_", outcomes)
        batch.extra = {
            "endpoint": body.get("endpoint"),
            "input_file_id": body["input_file_id"],
            "metadata": body.get("metadata"),
            "problem": problem,
        }
        self.sim.stats["openai.batches"] += 1
        return _json(self._openai_object(batch))

    async def openai_retrieve(self, request: web.Request) -> web.Response:
        if failure := await self._gate("openai", request):
            return failure
        return _json(self._openai_object(self._batch(request, "batch_")))

    async def openai_cancel(self, request: web.Request) -> web.Response:
        if failure := await self._gate("openai", request):
            return failure
        batch = self._batch(request, "batch_")
        if not batch.ended:
            batch.cancelled_at = time.monotonic()
        return _json(self._openai_object(batch))

    def _openai_object(self, batch: SimulatedBatch) -> dict[str, Any]:
        created = _epoch(batch.created_at)
        obj: dict[str, Any] = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.extra["endpoint"],
            "errors": None,
            "input_file_id": batch.extra["input_file_id"],
            "completion_window": "24h",
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created,
            "in_progress_at": created,
            "expires_at": created + COMPLETION_WINDOW_S,
            "metadata": batch.extra["metadata"],
            "request_counts": {"total": len(batch.outcomes), "completed": 0, "failed": 0},
        }
        if problem := batch.extra["problem"]:
            return obj | {
                "status": "failed",
                "failed_at": created,
                "errors": {"object": "list", "data": [problem]},
            }
        if not batch.ended:
            return obj
        return obj | self._openai_files(batch)

    def _openai_files(self, batch: SimulatedBatch) -> dict[str, Any]:
        """Once ended: successes in the output file, failures (and cancelled requests) in the error file."""
        if "files" not in batch.extra:
            ok, failed = [], []
            for custom_id, status, body in batch.outcomes:
                line = _openai_output_line(custom_id, None if batch.cancelled_at else (status, body))
                (ok if status == 200 and not batch.cancelled_at else failed).append(orjson.dumps(line))
            batch.extra["files"] = (
                self._store_file(f"{batch.id}_output.jsonl", b"\n".join(ok) + b"\n") if ok else None,
                self._store_file(f"{batch.id}_error.jsonl", b"\n".join(failed) + b"\n") if failed else None,
                len(ok),
                len(failed),
            )
        output, errors, n_ok, n_failed = batch.extra["files"]
        ended, status = _epoch(batch.ended_at()), "cancelled" if batch.cancelled_at else "completed"
        return {
            "status": status,
            f"{status}_at": ended,
            "finalizing_at": ended,
            "output_file_id": output,
            "error_file_id": errors,
            "request_counts": {"total": n_ok + n_failed, "completed": n_ok, "failed": n_failed},
        }

    # -- Anthropic ---------------------------------------------------------------------------------
    async def anthropic_create(self, request: web.Request) -> web.Response:
        if failure := await self._gate("anthropic", request):
            return failure
        requests = orjson.loads(await request.read()).get("requests") or []
        ids = [str(r.get("custom_id", "")) for r in requests]
        bad = next((i for i in ids if not ANTHROPIC_CUSTOM_ID.match(i)), None)
        if not requests or bad is not None or len(set(ids)) != len(ids):
            why = (
                f"custom_id {bad!r} must match {ANTHROPIC_CUSTOM_ID.pattern}"
                if bad is not None
                else "requests must be unique and non-empty"
            )
            return self.sim._error("anthropic", 400, "invalid_request_error", why)
        batch = self._new(
            "msgbatch_", [self._outcome("anthropic", r["custom_id"], r["params"]) for r in requests]
        )
        batch.extra = {
            "results_url": f"{request.scheme}://{request.host}/v1/messages/batches/{batch.id}/results"
        }
        self.sim.stats["anthropic.batches"] += 1
        return _json(self._anthropic_object(batch))

    async def anthropic_retrieve(self, request: web.Request) -> web.Response:
        if failure := await self._gate("anthropic", request):
            return failure
        return _json(self._anthropic_object(self._batch(request, "msgbatch_")))

    async def anthropic_cancel(self, request: web.Request) -> web.Response:
        if failure := await self._gate("anthropic", request):
            return failure
        batch = self._batch(request, "msgbatch_")
        if not batch.ended:
            batch.cancelled_at = time.monotonic()
        return _json(self._anthropic_object(batch))

    async def anthropic_results(self, request: web.Request) -> web.Response:
        if failure := await self._gate("anthropic", request):
            return failure
        batch = self._batch(request, "msgbatch_")
        if not batch.ended:
            return self.sim._error(
                "anthropic", 400, "invalid_request_error", f"batch {batch.id} is still processing"
            )
        lines = [
            orjson.dumps({"custom_id": c, "result": _anthropic_result(s, b, batch.cancelled_at)})
            for c, s, b in batch.outcomes
        ]
        return web.Response(body=b"\n".join(lines) + b"\n", content_type="application/binary")

    def _anthropic_object(self, batch: SimulatedBatch) -> dict[str, Any]:
        counts = {
            "processing": len(batch.outcomes),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        obj = {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + COMPLETION_WINDOW_S),
            "ended_at": None,
            "archived_at": None,
            "results_url": None,
            "cancel_initiated_at": _iso(batch.cancelled_at) if batch.cancelled_at else None,
        }
        if not batch.ended:
            return obj
        kinds = [_anthropic_result(s, b, batch.cancelled_at)["type"] for _, s, b in batch.outcomes]
        counts = {"processing": 0} | {
            k: kinds.count(k) for k in ("succeeded", "errored", "canceled", "expired")
        }
        return obj | {
            "processing_status": "ended",
            "request_counts": counts,
            "ended_at": _iso(batch.ended_at()),
            "results_url": batch.extra["results_url"],
        }


def _openai_line_problem(lines: list[dict[str, Any]], endpoint: str) -> dict[str, Any] | None:
    """A malformed input file fails the whole batch, as OpenAI's validation does."""
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or custom_id in seen:
            return {
                "code": "duplicate_custom_id",
                "line": number,
                "message": "custom_id missing or not unique",
                "param": "custom_id",
            }
        if (
            line.get("method") != "POST"
            or line.get("url") != endpoint
            or not isinstance(line.get("body"), dict)
        ):
            return {
                "code": "invalid_request",
                "line": number,
                "message": f"method must be POST and url {endpoint}",
                "param": "url",
            }
        seen.add(custom_id)
    return None


def _openai_output_line(custom_id: str, answer: tuple[int, dict[str, Any]] | None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": None,
        "error": None,
    }
    if answer is None:
        return line | {
            "error": {
                "code": "batch_cancelled",
                "message": "The batch was cancelled before this request ran.",
            }
        }
    status, body = answer
    return line | {"response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body}}


def _anthropic_result(status: int, body: dict[str, Any], cancelled_at: float | None) -> dict[str, Any]:
    if cancelled_at is not None:
        return {"type": "canceled"}
    if status != 200:
        return {"type": "errored", "error": body}
    return {"type": "succeeded", "message": body}


def _error_body(api: str, status: int) -> dict[str, Any]:
    kind = (
        "invalid_request_error" if status < 500 else ("api_error" if api == "anthropic" else "server_error")
    )
    message = f"simulated batch request failure (HTTP {status})"
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": None, "param": None}}


def _file_object(file_id: str, name: str, size: int, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": name,
        "purpose": purpose,
        "status": "processed",
    }


def _epoch(monotonic: float) -> int:
    return int(time.time() - (time.monotonic() - monotonic))


def _iso(monotonic: float) -> str:
    return datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic), UTC).isoformat()


def _not_found(prefix: str, given: str) -> web.HTTPNotFound:
    body = {"error": {"type": "not_found_error", "message": f"no such object {given!r}"}}
    return web.HTTPNotFound(body=orjson.dumps(body), content_type="application/json")


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
