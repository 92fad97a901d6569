"""NoveltyDetector: how unlike an item is from what a task's SLM traffic has looked like so far.

Items become hashed word uni+bigram vectors (stable crc32 hashing, L2-normalised); each task keeps the running
mean of the vectors it served. Score = 1 - cosine(item, centroid), in [0, 1]; None until the centroid has
`min_samples` items. Centroids persist to a file so restarts and `modelyard route --explain` see them.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

WORD = re.compile(r"[a-z0-9']+")
MAX_CHARS = 2000


class SparseVector(NamedTuple):
    indices: np.ndarray
    norm: float


class NoveltyDetector:
    def __init__(self, dims: int = 1024, min_samples: int = 50) -> None:
        self.dims = dims
        self.min_samples = min_samples
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def vector(self, text: str) -> SparseVector:
        """Hashed token indices (repeats allowed) and the L2 norm of their counts."""
        words = WORD.findall(text[:MAX_CHARS].lower())
        tokens = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        dims, crc32 = self.dims, zlib.crc32
        indices = [crc32(token.encode()) % dims for token in tokens]
        norm = math.sqrt(sum(c * c for c in Counter(indices).values()))
        return SparseVector(np.fromiter(indices, dtype=np.intp, count=len(indices)), norm)

    def score(self, task: str, vec: SparseVector) -> float | None:
        if self.counts.get(task, 0) < self.min_samples:
            return None
        centroid = self.sums[task]
        norm = float(np.sqrt(centroid @ centroid))
        if not norm or not vec.norm:
            return 1.0
        cosine = float(centroid[vec.indices].sum()) / (norm * vec.norm)
        return min(1.0, max(0.0, 1.0 - cosine))

    def learn(self, task: str, vec: SparseVector) -> None:
        if task not in self.sums:
            self.sums[task] = np.zeros(self.dims, dtype=np.float64)
        if vec.norm:
            np.add.at(self.sums[task], vec.indices, 1.0 / vec.norm)
        self.counts[task] = self.counts.get(task, 0) + 1

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        arrays = {f"sum:{task}": s for task, s in self.sums.items()}
        np.savez(temporary, counts=np.array([self.counts[t] for t in self.sums]), tasks=np.array(list(self.sums)), **arrays)
        os.replace(temporary, path)

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        with np.load(path) as data:
            for task, count in zip(data["tasks"].tolist(), data["counts"].tolist()):
                if data[f"sum:{task}"].shape == (self.dims,):
                    self.sums[task], self.counts[task] = data[f"sum:{task}"].astype(np.float64), int(count)
        return True
