"""StudentModel: a small CPU text classifier distilled from frontier answers.

Hashed word uni- and bigrams (scikit-learn's HashingVectorizer: no vocabulary to store) and a multinomial
logistic regression. Saved as plain arrays (`model.npz`) plus the vectorizer's settings (`student.json`), not
a pickle: loading a model never runs code, and a model outlives a scikit-learn upgrade. Predictions are
restricted to the item's own label set, and the label's probability among them is the confidence the
pool's cascade judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from modelyard.core._exceptions import ConfigError

VECTORIZER = {
    "n_features": 2**16,
    "ngram_range": [1, 2],
    "alternate_sign": False,
    "norm": "l2",
    "token_pattern": r"(?u)\b[a-zA-Z]+\b",  # words only: numbers are ids, not meaning
}
REGULARISATION_C = 10.0


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


class StudentModel:
    def __init__(
        self, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray, vectorizer: dict[str, object]
    ) -> None:
        self.classes = [str(c) for c in classes]
        self.coef = coef
        self.intercept = intercept
        self.vectorizer_settings = vectorizer
        params = {**vectorizer, "ngram_range": tuple(vectorizer["ngram_range"])}  # type: ignore[arg-type]
        self.vectorizer = HashingVectorizer(**params)
        self.index = {label: i for i, label in enumerate(self.classes)}

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str]) -> StudentModel:
        """Fit on (text, teacher label) pairs; needs at least two distinct labels."""
        if len(set(labels)) < 2:
            raise ConfigError(
                f"cannot train a student on {len(set(labels))} distinct label(s); it needs at least 2"
            )
        vectorizer = HashingVectorizer(**{**VECTORIZER, "ngram_range": tuple(VECTORIZER["ngram_range"])})  # type: ignore[arg-type]
        fitted = LogisticRegression(C=REGULARISATION_C, max_iter=2000).fit(
            vectorizer.transform(texts), labels
        )
        return cls(fitted.classes_, fitted.coef_, fitted.intercept_, VECTORIZER)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, one column per known class (softmax of the linear scores)."""
        scores = self.vectorizer.transform(texts) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # scikit-learn keeps one weight row for two classes
            scores = np.hstack([np.zeros_like(scores), scores])
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str], allowed: Sequence[Sequence[str]]) -> list[Prediction | None]:
        """The most likely allowed label of each text and its probability among the allowed ones;
        None where the student knows none of the allowed labels."""
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
        (directory / "student.json").write_bytes(
            orjson.dumps({"vectorizer": self.vectorizer_settings}, option=orjson.OPT_INDENT_2)
        )

    @classmethod
    def load(cls, directory: Path) -> StudentModel:
        try:
            arrays = np.load(directory / "model.npz", allow_pickle=False)
            settings = orjson.loads((directory / "student.json").read_bytes())
        except (OSError, ValueError, orjson.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot load the student model in {directory}: {exc}",
                hint="run `modelyard distill --task <task>` again",
            ) from exc
        return cls(arrays["classes"], arrays["coef"], arrays["intercept"], settings["vectorizer"])
