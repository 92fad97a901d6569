"""ReplayBackend (`api: replay`): answers from a recording of real models' answers instead of calling a model.

The pool, its chain, the sink and the cost ledger treat it like any provider, so results, costs and eval scores
are computed exactly as for a live one; the Result names the pool's model (the recorded model it stands for),
which the price catalog prices as if it had been called.

The recording is a JSONL file in one of the shapes `schemas/recording.py` documents (the project's own, RouteLLM's
`{prompt, category, scores}`, or a labelled `{text, label}` dataset). An item is found by, in order:

1. its metadata value under `providers.<name>.recording_key` (default `recording_id`), matched with a line's `id`;
2. its job id, matched with a line's `id`;
3. its input text, normalised (case folded, whitespace collapsed), matched with a line's input. The first line
   with a text wins when a dataset repeats one.

An item the recording does not hold fails the call (not retryable: another try cannot find it either).

What the pool's model answers:

* its recorded `output` when there is one;
* else, with a recorded score: the expected answer when the score is >= 0.5, else a wrong one;
* else, when the line has an expected answer (a labelled dataset): the labelled teacher answers the expected
  label with probability `providers.<name>.teacher_accuracy`, decided by a hash of the job id and the model (the
  same job always gets the same answer), else a wrong label;
* else the call fails, naming the models the line recorded.

A wrong answer is another label of the item's label set (or, failing that, of the recording's labels), picked by
the same hash; with none to pick, RECORDED_WRONG. Token counts are the recorded ones, else counted with a real
tokenizer (workers/pools/token_counts.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from modelyard.core._exceptions import ConfigError, InvalidInput, ProviderError
from modelyard.core.settings import ProviderSettings
from schemas import TaskType, Usage, WorkItem
from schemas.recording import RECORDED_WRONG, Recording, parse_recording
from workers.pools.backends.base import Completion
from workers.pools.token_counts import TokenCounter


def normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def read_recordings(path: Path) -> Iterator[Recording]:
    """Every line of a recording file; a bad line raises InvalidInput naming its number and field."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the recording {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse_recording(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not valid JSON ({exc})") from exc
        except ValueError as exc:
            raise InvalidInput(f"{path}:{number}: {exc}", field=str(exc).partition(":")[0]) from exc


def stable_fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by the parts (the same job and model always draw the same)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class RecordingIndex:
    """The recording's lines, found by id and by normalised input text."""

    def __init__(self, recordings: list[Recording], source: str) -> None:
        self.source = source
        self.recordings = recordings
        self.by_id = {r.id: r for r in recordings if r.id is not None}
        self.by_text: dict[str, Recording] = {}
        for r in recordings:
            self.by_text.setdefault(normalised(r.text()), r)
        self.labels = sorted({str(r.expected) for r in recordings if r.expected is not None})

    @classmethod
    def load(cls, path: Path) -> RecordingIndex:
        recordings = list(read_recordings(path))
        if not recordings:
            raise ConfigError(f"the recording {path} holds no items")
        return cls(recordings, str(path))

    def find(self, item: WorkItem, key: str) -> Recording | None:
        named = item.metadata.get(key)
        for candidate in (named, item.job_id):
            if candidate is not None and candidate in self.by_id:
                return self.by_id[candidate]
        return self.by_text.get(normalised(item.input_text()))


@dataclass(frozen=True)
class Answer:
    output: str
    input_tokens: int | None
    output_tokens: int | None


class ReplayBackend:
    def __init__(
        self,
        provider: str,
        config: ProviderSettings,
        model: str,
        index: RecordingIndex | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        if config.recording is None and index is None:
            raise ConfigError(f"providers.{provider}.recording: a replay provider needs a recording file")
        self.provider = provider
        self.model = model
        self.key = config.recording_key
        self.teacher_accuracy = config.teacher_accuracy
        self.index = index or RecordingIndex.load(config.recording)  # type: ignore[arg-type]
        self._counter = counter

    async def complete(self, item: WorkItem, task_type: TaskType) -> Completion:
        recording = self.index.find(item, self.key)
        if recording is None:
            raise ProviderError(
                f"{self.provider}: item {item.job_id} is not in the recording {self.index.source} (looked up by "
                f"metadata[{self.key!r}], job id and input text)",
                provider=self.provider,
            )
        answer = self._answer(item, recording)
        usage = Usage(
            input_tokens=answer.input_tokens
            if answer.input_tokens is not None
            else self._prompt_tokens(item),
            output_tokens=answer.output_tokens
            if answer.output_tokens is not None
            else max(1, self.counter.count(answer.output)),
        )
        return Completion(output=answer.output, usage=usage, model=self.model)

    def _answer(self, item: WorkItem, recording: Recording) -> Answer:
        recorded = recording.answers.get(self.model)
        if recorded is not None and recorded.output is not None:
            return Answer(recorded.output, recorded.input_tokens, recorded.output_tokens)
        if recorded is not None:
            right = bool(recorded.right)
        elif recording.expected is not None:
            right = stable_fraction(item.job_id, self.model) < self.teacher_accuracy
        else:
            raise ProviderError(
                f"{self.provider}: the recording has no answer of {self.model} for item {item.job_id} "
                f"(it recorded {sorted(recording.answers)})",
                provider=self.provider,
            )
        output = recording.expected_answer() if right else self._wrong(item, recording)
        return Answer(
            output, recorded.input_tokens if recorded else None, recorded.output_tokens if recorded else None
        )

    def _wrong(self, item: WorkItem, recording: Recording) -> str:
        expected = recording.expected_answer()
        choices = [
            label
            for label in (item.params.labels or recording.label_set() or self.index.labels)
            if label != expected
        ]
        if not choices:
            return RECORDED_WRONG
        return choices[int(stable_fraction("wrong", item.job_id, self.model) * len(choices))]

    def _prompt_tokens(self, item: WorkItem) -> int:
        instructions = item.params.instructions or ""
        return self.counter.count(
            f"{instructions}\n{item.input_text()}" if instructions else item.input_text()
        )

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter()
        return self._counter

    async def close(self) -> None:
        return None
