"""CPU per item of the embedding student: the sentence encoder (onnxruntime) plus the student's regression.

    .venv/bin/python benchmarks/encoder.py                          # the default grid on bundled Banking77
    .venv/bin/python benchmarks/encoder.py DATA.jsonl --items 2048 --repeats 5 --json

Texts ({text, ...} JSONL; default the bundled Banking77) are shuffled with a seed and fed in batches, as the
pool's CallBatcher hands them over. Each configuration encodes the same items --repeats times; the figure is
the process CPU time (all threads) per item of the fastest repeat (the least disturbed by other work on the
machine), with the median beside it. Rows:

* padding: `sorted chunks` (the serving default: a batch sorted by token count, run in chunks of `chunk`
  texts, longer while the token count stays the same, each padded to its own longest), `batch longest` (one run per batch, padded to the batch's longest text),
  `fixed 128` (every text padded to 128 tokens, the usual default of a sentence-transformers export);
* threads: onnxruntime's intra-op threads of the session;
* student: the whole `StudentModel.predict` of an embedding student (encoder, 77-label regression, calibrated
  softmax, the item's label set) at the serving default, against the 2 ms target.

--model PATH compares another ONNX export of the same encoder (e.g. an fp32 one) at the serving default.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.pools.encoder import DEFAULT_ENCODER_DIR, SentenceEncoder  # noqa: E402
from workers.pools.student import StudentModel, features_for  # noqa: E402

BANKING77 = ROOT / "modelyard" / "data" / "labelled" / "banking77.jsonl"
TARGET_MS = 2.0


def read_texts(path: Path, items: int, seed: int) -> tuple[list[str], list[str]]:
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    rows = rows[:items]
    return [r["text"] for r in rows], [str(r.get("label", "")) for r in rows]


def cpu_ms_per_item(
    run: Callable[[Sequence[str]], object], texts: list[str], batch: int, repeats: int
) -> tuple[float, float]:
    """(fastest, median) process CPU ms per item over `repeats` passes of `texts` in batches of `batch`."""
    run(texts[:batch])  # warm up: arena, kernels
    figures = []
    for _ in range(repeats):
        started = time.process_time()
        for start in range(0, len(texts), batch):
            run(texts[start : start + batch])
        figures.append(1000 * (time.process_time() - started) / len(texts))
    return min(figures), statistics.median(figures)


def fixed_length(encoder: SentenceEncoder, length: int) -> Callable[[Sequence[str]], object]:
    """The same encoder with every text padded to `length` tokens (the baseline bucketing improves on)."""
    return lambda texts: encoder.encode_tokens(encoder.tokenize(texts), width=length)


def batch_longest(encoder: SentenceEncoder) -> Callable[[Sequence[str]], object]:
    """The whole batch in one run, in arrival order, padded to its longest text."""
    return lambda texts: encoder.encode_tokens(encoder.tokenize(texts))


def padding_rows(args: argparse.Namespace, texts: list[str]) -> list[dict[str, object]]:
    rows = []
    for threads in args.threads:
        for batch in args.batches:
            for chunk in args.chunks:
                encoder = SentenceEncoder(args.encoder_dir, threads=threads, chunk=min(chunk, batch))
                best, median = cpu_ms_per_item(encoder.encode, texts, batch, args.repeats)
                rows.append(_row("sorted chunks", threads, batch, min(chunk, batch), best, median))
            unsorted = batch_longest(SentenceEncoder(args.encoder_dir, threads=threads))
            rows.append(_row("batch longest", threads, batch, batch, *_run(unsorted, texts, batch, args)))
            fixed = fixed_length(SentenceEncoder(args.encoder_dir, threads=threads), 128)
            rows.append(_row("fixed 128", threads, batch, batch, *_run(fixed, texts, batch, args)))
    return rows


def _run(
    run: Callable[[Sequence[str]], object], texts: list[str], batch: int, args: argparse.Namespace
) -> tuple[float, float]:
    return cpu_ms_per_item(run, texts, batch, args.repeats)


def _row(what: str, threads: int, batch: int, chunk: int, best: float, median: float) -> dict[str, object]:
    return {
        "what": what,
        "threads": threads,
        "batch": batch,
        "chunk": chunk,
        "cpu_ms": round(best, 3),
        "median": round(median, 3),
    }


def student_row(args: argparse.Namespace, texts: list[str], labels: list[str]) -> dict[str, object]:
    """An embedding student trained on the first half, timed answering the second (the serving default)."""
    half = len(texts) // 2
    model = StudentModel.train_on(
        features_for("embedding", args.encoder_dir),
        features_for("embedding", args.encoder_dir).transform(texts[:half]),
        labels[:half],
    )
    allowed = sorted(set(labels))
    serving = texts[half:]
    best, median = cpu_ms_per_item(
        lambda t: model.predict(list(t), [allowed] * len(t)), serving, args.student_batch, args.repeats
    )
    return _row("student predict", 1, args.student_batch, SentenceEncoder.DEFAULT_CHUNK, best, median)


def model_row(args: argparse.Namespace, texts: list[str]) -> dict[str, object]:
    encoder = SentenceEncoder(args.encoder_dir, threads=1)
    encoder.session = _other_session(args.model)
    best, median = cpu_ms_per_item(encoder.encode, texts, args.student_batch, args.repeats)
    return _row(f"model {args.model.name}", 1, args.student_batch, encoder.chunk, best, median)


def _other_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def print_table(rows: list[dict[str, object]], items: int) -> None:
    print(f"{items} items; CPU ms per item (fastest repeat, median); target < {TARGET_MS} ms")
    print(
        f"{'what':<20} {'threads':>7} {'batch':>5} {'chunk':>5} {'cpu ms':>7} {'median':>7} {'vs target':>9}"
    )
    for r in rows:
        ratio = float(r["cpu_ms"]) / TARGET_MS  # type: ignore[arg-type]
        print(
            f"{r['what']:<20} {r['threads']:>7} {r['batch']:>5} {r['chunk']:>5} {r['cpu_ms']:>7.3f} "
            f"{r['median']:>7.3f} {ratio:>8.2f}x"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=BANKING77)
    parser.add_argument("--items", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=_ints, default=[8, 32, 64])
    parser.add_argument("--chunks", type=_ints, default=[4, 8, 16])
    parser.add_argument("--threads", type=_ints, default=[1])
    parser.add_argument("--student-batch", type=int, default=32)
    parser.add_argument("--encoder-dir", type=Path, default=DEFAULT_ENCODER_DIR)
    parser.add_argument("--model", type=Path, help="another ONNX export to compare at the serving default")
    parser.add_argument("--no-grid", action="store_true", help="only the student (and --model) rows")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    texts, labels = read_texts(args.data, args.items, args.seed)
    rows = [] if args.no_grid else padding_rows(args, texts)
    rows.append(student_row(args, texts, labels))
    if args.model is not None:
        rows.append(model_row(args, texts))
    if args.json:
        print(orjson.dumps({"items": len(texts), "target_ms": TARGET_MS, "rows": rows}).decode())
    else:
        print_table(rows, len(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
