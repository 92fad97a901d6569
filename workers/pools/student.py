"""StudentModel: a small CPU text classifier distilled from frontier answers, of one of two kinds.

- `ngram`: hashed word uni- and bigrams (scikit-learn's HashingVectorizer: no vocabulary to store) and a
  multinomial logistic regression. Cheap (~0.05 ms an item); learns wording it has seen.
- `embedding`: all-MiniLM-L6-v2 sentence embeddings (workers/pools/encoder.py, onnxruntime) and a
  multinomial logistic regression, with each label's own name as one more training example ("card_arrival"
  reads "card arrival"): paraphrases of a label it has few examples of still land near it. On Banking77 it
  serves far more items at 0.95 accuracy than the n-gram kind from the same labels (modelyard/ops/
  student_quality.py measures both); ~1-2 ms CPU an item in batches.

Confidence is calibrated: the scores are divided by a temperature fitted on held-out answers (`calibrated`),
so a confidence of 0.9 is right about 9 times in 10 and the cascade threshold means what it says.
Predictions are restricted to the item's own label set, and the label's probability among them is the
confidence the pool's cascade judges.

Saved as plain arrays (`model.npz`) plus settings (`student.json`: kind, features, temperature), never a
pickle: loading a model never runs code, and a model outlives a scikit-learn upgrade. An embedding student
records the encoder's identity and refuses to load with another encoder.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson
from scipy.optimize import minimize_scalar
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from modelyard.core._exceptions import ConfigError
from workers.pools.encoder import DEFAULT_ENCODER_DIR, SentenceEncoder

KINDS = ("ngram", "embedding")
VECTORIZER = {
    "n_features": 2**16,
    "ngram_range": [1, 2],
    "alternate_sign": False,
    "norm": "l2",
    "token_pattern": r"(?u)\b[a-zA-Z]+\b",  # words only: numbers are ids, not meaning
}
REGRESSION = {
    "ngram": {"C": 10.0},
    "embedding": {"C": 30.0, "tol": 1e-3},
}  # C by held-out coverage on Banking77
TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


class Features(Protocol):
    kind: str

    def transform(self, texts: Sequence[str]) -> object: ...

    def settings(self) -> dict[str, object]: ...


class HashedNgrams:
    kind = "ngram"

    def __init__(self, settings: dict[str, object]) -> None:
        self._settings = settings
        self.vectorizer = HashingVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})  # type: ignore[arg-type]

    def transform(self, texts: Sequence[str]) -> object:
        return self.vectorizer.transform(texts)

    def settings(self) -> dict[str, object]:
        return {"vectorizer": self._settings}


class SentenceEmbeddings:
    kind = "embedding"

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def settings(self) -> dict[str, object]:
        return {"encoder": self.encoder.identity}


@functools.lru_cache(maxsize=4)
def shared_encoder(directory: Path) -> SentenceEncoder:
    """One encoder a directory per process: every embedding student of a pool shares its session."""
    return SentenceEncoder(directory)


def label_text(label: str) -> str:
    return label.replace("_", " ").replace("-", " ").strip().lower()


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)


class StudentModel:
    def __init__(
        self,
        classes: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        features: Features,
        temperature: float = 1.0,
    ) -> None:
        self.classes = [str(c) for c in classes]
        self.coef = coef
        self.intercept = intercept
        self.features = features
        self.temperature = temperature
        self.index = {label: i for i, label in enumerate(self.classes)}

    @property
    def kind(self) -> str:
        return self.features.kind

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        kind: str = "ngram",
        encoder_dir: Path = DEFAULT_ENCODER_DIR,
    ) -> StudentModel:
        """Fit on (text, teacher label) pairs; needs at least two distinct labels. Uncalibrated (temperature 1);
        an embedding student also learns each label's name as one more example of it."""
        features = features_for(kind, encoder_dir)
        rows, targets = list(texts), list(labels)
        if kind == "embedding":
            names = sorted(set(labels))
            rows, targets = rows + [label_text(n) for n in names], targets + names
        return cls.train_on(features, features.transform(rows), targets)

    @classmethod
    def train_on(cls, features: Features, matrix: object, labels: Sequence[str]) -> StudentModel:
        """Fit on rows `features` already made (a benchmark encodes a dataset once)."""
        if len(set(labels)) < 2:
            raise ConfigError(
                f"cannot train a student on {len(set(labels))} distinct label(s); it needs at least 2"
            )
        fitted = LogisticRegression(max_iter=2000, **REGRESSION[features.kind]).fit(matrix, list(labels))
        return cls(fitted.classes_, fitted.coef_, fitted.intercept_, features)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.scores_from(self.features.transform(texts))

    def scores_from(self, matrix: object) -> np.ndarray:
        """The linear scores, one column per known class (scikit-learn keeps one weight row for two classes)."""
        scores = np.asarray(matrix @ self.coef.T + self.intercept)
        if self.coef.shape[0] == 1:
            scores = np.hstack([np.zeros_like(scores), scores])
        return scores

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, one column per known class: the calibrated softmax."""
        return self.probabilities_from(self.features.transform(texts))

    def probabilities_from(self, matrix: object) -> np.ndarray:
        return softmax(self.scores_from(matrix) / self.temperature)

    def calibrated(self, texts: Sequence[str], labels: Sequence[str]) -> StudentModel:
        """This model with the temperature that best predicts `labels` (held-out answers it did not train on)."""
        return self.calibrated_on(self.features.transform(texts), labels)

    def calibrated_on(self, matrix: object, labels: Sequence[str]) -> StudentModel:
        """Minimum negative log-likelihood temperature; rows whose label the model never saw are left out."""
        known = np.array([label in self.index for label in labels], dtype=bool)
        if not known.any():
            return self
        scores = self.scores_from(matrix)[known]
        rows = np.arange(len(scores))
        columns = np.array([self.index[label] for label, k in zip(labels, known, strict=True) if k])

        def loss(temperature: float) -> float:
            return float(-np.log(softmax(scores / temperature)[rows, columns] + 1e-12).mean())

        fitted = minimize_scalar(loss, bounds=TEMPERATURE_BOUNDS, method="bounded")
        return StudentModel(np.array(self.classes), self.coef, self.intercept, self.features, float(fitted.x))

    def predict(self, texts: Sequence[str], allowed: Sequence[Sequence[str]]) -> list[Prediction | None]:
        """The most likely allowed label of each text and its probability among the allowed ones;
        None where the student knows none of the allowed labels."""
        if not texts:
            return []
        out: list[Prediction | None] = []
        for row, labels in zip(self.probabilities(texts), allowed, strict=True):
            known = [label for label in labels if label in self.index]
            if not known:
                out.append(None)
                continue
            weights = np.array([row[self.index[label]] for label in known])
            best = int(weights.argmax())
            out.append(Prediction(known[best], float(weights[best] / weights.sum())))
        return out

    def agreement(
        self, texts: Sequence[str], allowed: Sequence[Sequence[str]], labels: Sequence[str]
    ) -> float:
        """Share of texts where the student gives the teacher's label."""
        if not texts:
            return 0.0
        predictions = self.predict(texts, allowed)
        return sum(
            p is not None and p.label == want for p, want in zip(predictions, labels, strict=True)
        ) / len(texts)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / "model.npz", classes=np.array(self.classes), coef=self.coef, intercept=self.intercept
        )
        settings = {"kind": self.kind, "temperature": self.temperature, **self.features.settings()}
        (directory / "student.json").write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, directory: Path, encoder_dir: Path = DEFAULT_ENCODER_DIR) -> StudentModel:
        try:
            arrays = np.load(directory / "model.npz", allow_pickle=False)
            settings = orjson.loads((directory / "student.json").read_bytes())
            classes, coef, intercept = arrays["classes"], arrays["coef"], arrays["intercept"]
        except (OSError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot load the student model in {directory}: {exc}",
                hint="run `modelyard distill --task <task>` again",
            ) from exc
        kind = settings.get("kind", "ngram")  # models saved before kinds existed are n-gram students
        if kind == "ngram":
            features: Features = HashedNgrams(settings["vectorizer"])
        else:
            features = _embeddings(encoder_dir, expected=settings.get("encoder"), directory=directory)
        return cls(classes, coef, intercept, features, float(settings.get("temperature", 1.0)))


def features_for(kind: str, encoder_dir: Path = DEFAULT_ENCODER_DIR) -> Features:
    if kind == "ngram":
        return HashedNgrams(VECTORIZER)
    if kind == "embedding":
        return SentenceEmbeddings(shared_encoder(encoder_dir))
    raise ConfigError(f"unknown student kind {kind!r}; known: {', '.join(KINDS)}")


def _embeddings(encoder_dir: Path, expected: object, directory: Path) -> SentenceEmbeddings:
    encoder = shared_encoder(encoder_dir)
    if expected != encoder.identity:
        raise ConfigError(
            f"the student in {directory} was trained on encoder {expected}, but {encoder_dir} holds {encoder.identity}",
            hint="run `modelyard distill --task <task>` again with this encoder",
        )
    return SentenceEmbeddings(encoder)
