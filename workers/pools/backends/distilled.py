"""DistilledBackend: the registered student model of each task, served inside the pool's own process (no HTTP).

The answer is the student's label within the item's label set; its probability among those labels is the
confidence, so a pool's cascade escalates the answers the student is unsure of. Tokens are estimated as the
simulator and the rate limits count them (four characters a token; the student reads the input only), and the
sink prices them with the self-hosted cost model of `modelyard/data/prices/distilled.yaml`. The model is named
`<pool model>@<task>-<version>`; prices apply to the part before the `@`.

Concurrent calls are answered together: a `CallBatcher` per loaded student gathers the items the pool
dispatches at the same time into one `predict` (one encoder batch for an embedding student) and runs it in a
worker thread, so the event loop keeps consuming and producing while the encoder works.

A newly registered version is picked up within `distill.reload_interval_s` (a task without a model is
looked up on every call, so the first registration is served at once).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from modelyard.core._exceptions import ConfigError, ProviderError
from modelyard.core.settings import PoolSettings
from schemas import TaskType, Usage, WorkItem
from workers.pools.backends.base import Completion
from workers.pools.encoder import CallBatcher
from workers.pools.model_registry import ModelRegistry
from workers.pools.student import Prediction, StudentModel


def estimated_tokens(text: str) -> int:
    """About four characters a token, as the simulator and the providers' tokenizers average on English."""
    return max(1, math.ceil(len(text) / 4))


@dataclass
class _Loaded:
    version: str | None
    model: StudentModel | None
    pointer_mtime: float | None
    checked_at: float
    batcher: CallBatcher[tuple[str, tuple[str, ...]], Prediction | None] | None = None


def _batch_predict(student: StudentModel):  # -> Callable[[list[(text, labels)]], list[Prediction | None]]
    def run(items: list[tuple[str, tuple[str, ...]]]) -> list[Prediction | None]:
        return student.predict([text for text, _ in items], [labels for _, labels in items])

    return run


class DistilledBackend:
    def __init__(
        self, provider: str, pool: PoolSettings, registry: ModelRegistry, reload_interval_s: float
    ) -> None:
        self.provider = provider
        self.pool = pool
        self.registry = registry
        self.reload_interval_s = reload_interval_s
        self.loaded: dict[TaskType, _Loaded] = {}

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        labels = item.params.labels
        if task_type is not TaskType.CLASSIFICATION or not labels:
            raise ProviderError(
                f"{self.provider}: students classify only; route {task_type.value} elsewhere",
                provider=self.provider,
            )
        version, batcher = self._student(task_type)
        text = item.input_text()
        prediction = await batcher((text, tuple(labels)))
        if prediction is None:
            raise ProviderError(
                f"{self.provider}: the {task_type.value} student ({version}) knows none of the labels {labels[:5]}; "
                "distill it on answers with these labels or route them elsewhere",
                provider=self.provider,
            )
        usage = Usage(input_tokens=estimated_tokens(text), output_tokens=estimated_tokens(prediction.label))
        model = f"{self.pool.model}@{task_type.value}-{version}"
        return Completion(output=prediction.label, usage=usage, model=model, confidence=prediction.confidence)

    def _student(
        self, task_type: TaskType
    ) -> tuple[str, CallBatcher[tuple[str, tuple[str, ...]], Prediction | None]]:
        loaded, now = self.loaded.get(task_type), time.monotonic()
        if loaded is None or loaded.model is None or now - loaded.checked_at >= self.reload_interval_s:
            loaded = self._refresh(task_type, loaded, now)
        if loaded.model is None or loaded.version is None or loaded.batcher is None:
            raise ProviderError(
                f"{self.provider}: no registered student for task {task_type.value} in {self.registry.root}; "
                f"run `modelyard distill --task {task_type.value}`",
                provider=self.provider,
            )
        return loaded.version, loaded.batcher

    def _refresh(self, task_type: TaskType, loaded: _Loaded | None, now: float) -> _Loaded:
        """Reload when the task's CURRENT pointer changed; a broken registration keeps the model already served."""
        mtime = self.registry.pointer_mtime(task_type.value)
        if loaded is not None and loaded.model is not None and mtime == loaded.pointer_mtime:
            loaded.checked_at = now
            return loaded
        try:
            found = self.registry.load_current(task_type.value)
        except ConfigError as exc:
            if loaded is not None and loaded.model is not None:
                loaded.checked_at = now
                return loaded
            raise ProviderError(f"{self.provider}: {exc}", provider=self.provider) from exc
        version, model = found if found else (None, None)
        batcher = CallBatcher(_batch_predict(model)) if model is not None else None
        if loaded is not None and loaded.batcher is not None:
            loaded.batcher.close()  # calls already in its batch finish; new ones go to the new model
        self.loaded[task_type] = _Loaded(version, model, mtime, now, batcher)
        return self.loaded[task_type]

    async def close(self) -> None:
        for loaded in self.loaded.values():
            if loaded.batcher is not None:
                loaded.batcher.close()
