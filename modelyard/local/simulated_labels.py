"""How the provider simulator answers classification: a consistent, learnable teacher and a weaker small model.

Frontier (teacher) models label by word evidence: every word of the input adds its cue weight to a label
(a small vocabulary for the bundled ticket and review labels; a word equal to a label's name counts too),
plus a small deterministic word-label affinity (a hash), so that every word carries some signal and any
label set gets a consistent answer. The answer is the label with the highest score: a fixed function of the
input's words, as a real frontier model is mostly consistent, so a student can learn it (`modelyard distill`).
Numbers are ignored, as a real model would ignore a ticket number.

Small models (`simulator.small_models`) give the teacher's answer on `simulator.small_model_accuracy` of the
items (chosen by a hash of the input) and the runner-up label otherwise, with lower confidence when wrong, so a
confidence cascade catches part of their mistakes.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

WORD = re.compile(r"[a-z]+")
AFFINITY = 0.2  # the hashed word-label weight lies in [-AFFINITY, AFFINITY]; a cue word weighs 1
CUES: dict[str, frozenset[str]] = {
    label: frozenset(words.split())
    for label, words in {
        "billing": "charged charge refund refunded invoice invoices card payment paid pay price plan subscription "
        "billing bill billed money receipt vat tax discount renewal",
        "bug": "crash crashes crashed error errors bug broken blank freeze freezes frozen slow fails failing failed "
        "glitch stuck timeout missing wrong update",
        "feature_request": "add wish feature idea suggestion support option integration would love great mode "
        "could roadmap allow",
        "account": "password login log reset account teammate teammates workspace delete sign email profile "
        "username locked access invite",
        "positive": "great perfectly lovely fast love excellent happy recommend perfect",
        "negative": "broke terrible disappointed never bad awful worst poor returned",
        "neutral": "job fine okay ok time nothing special average expected",
    }.items()
}


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def affinity(word: str, label: str) -> float:
    """A fixed pseudo-random weight in [-AFFINITY, AFFINITY] for one word and one label."""
    return ((_hash(f"{word}\0{label}") % 2001) / 1000 - 1) * AFFINITY


@lru_cache(maxsize=1 << 16)
def word_weight(word: str, label: str) -> float:
    """What one occurrence of `word` adds to `label`: 1 for a cue word, plus its affinity. Memoised: the same
    words and labels come back on every request, and hashing them was most of the simulator's CPU."""
    return (word in _cues(label)) + affinity(word, label)


@lru_cache(maxsize=4096)
def _cues(label: str) -> frozenset[str]:
    return CUES.get(label.lower(), frozenset()) | {label.lower()}


@lru_cache(maxsize=4096)
def _tie_break(label: str) -> int:
    return _hash(label)


def label_scores(text: str, labels: list[str]) -> dict[str, float]:
    """The teacher's evidence for each label: cue words weigh 1, every word adds its hashed affinity."""
    words = Counter(WORD.findall(text.lower()))
    return {label: sum(n * word_weight(w, label) for w, n in words.items()) for label in labels}


def teacher_label(text: str, labels: list[str]) -> str:
    scores = label_scores(text, labels)
    return max(labels, key=lambda label: (scores[label], _tie_break(label)))


@dataclass(frozen=True)
class SimulatedClassifier:
    small_models: frozenset[str]
    small_model_accuracy: float
    gold: dict[str, str] = field(
        default_factory=dict
    )  # text -> its ground-truth label (simulator.gold_labels)

    def answer(self, text: str, labels: list[str], model: str) -> tuple[str, float]:
        """(label, confidence): the teacher's label for frontier models; a small model's is right on a share."""
        digest = _hash(f"{model}\0{text}")
        unit = ((digest >> 16) % 1000) / 1000
        if model not in self.small_models:
            gold = self.gold.get(text)
            return (gold if gold in labels else teacher_label(text, labels)), 0.35 + 0.65 * unit
        if digest % 1000 < self.small_model_accuracy * 1000 or len(labels) < 2:
            return teacher_label(text, labels), 0.55 + 0.45 * unit
        scores = label_scores(text, labels)
        runner_up = sorted(labels, key=lambda label: (scores[label], _tie_break(label)), reverse=True)[1]
        return runner_up, 0.35 + 0.4 * unit
