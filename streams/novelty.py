"""NoveltyDetector: how unlike an item is from the SLM traffic of its task so far.

Items become hashed word uni+bigram vectors (stable crc32 hashing). Each task keeps up to `prototypes`
centroids, learned online by leader clustering: an item joins its nearest centroid when their cosine is at
least `merge_cosine`, else it starts a new one (or joins the nearest when all are taken). Recurring kinds of
work (ticket templates, review styles) each get a centroid. Score = 1 - the best cosine, in [0, 1]; None
until the task has `min_samples` items. Centroids persist to a file so restarts and
`modelyard route --explain` see them.
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


class TaskCentroids:
    """Sums of unit vectors per centroid (rows), their counts, and row norms kept current."""

    def __init__(self, dims: int, capacity: int) -> None:
        self.sums = np.zeros((capacity, dims), dtype=np.float64)
        self.norms = np.zeros(capacity, dtype=np.float64)
        self.counts = np.zeros(capacity, dtype=np.int64)
        self.used = 0

    def cosines(self, vec: SparseVector) -> np.ndarray:
        used = self.used
        dots = self.sums[:used, vec.indices].sum(axis=1)
        return dots / (self.norms[:used] * vec.norm)

    def add(self, row: int, vec: SparseVector) -> None:
        np.add.at(self.sums[row], vec.indices, 1.0 / vec.norm)
        self.norms[row] = math.sqrt(float(self.sums[row] @ self.sums[row]))
        self.counts[row] += 1


class NoveltyDetector:
    def __init__(self, dims: int = 1024, min_samples: int = 50, prototypes: int = 64, merge_cosine: float = 0.5) -> None:
        self.dims = dims
        self.min_samples = min_samples
        self.prototypes = prototypes
        self.merge_cosine = merge_cosine
        self.tasks: dict[str, TaskCentroids] = {}

    def vector(self, text: str) -> SparseVector:
        """Hashed token indices (repeats allowed) and the L2 norm of their counts."""
        words = WORD.findall(text[:MAX_CHARS].lower())
        tokens = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        dims, crc32 = self.dims, zlib.crc32
        indices = [crc32(token.encode()) % dims for token in tokens]
        norm = math.sqrt(sum(c * c for c in Counter(indices).values()))
        return SparseVector(np.fromiter(indices, dtype=np.intp, count=len(indices)), norm)

    def samples(self, task: str) -> int:
        centroids = self.tasks.get(task)
        return int(centroids.counts.sum()) if centroids else 0

    def score(self, task: str, vec: SparseVector) -> float | None:
        return self.assess(task, vec)[0]

    def assess(self, task: str, vec: SparseVector) -> tuple[float | None, np.ndarray | None]:
        """(score, cosines to the task's centroids); the cosines can be handed to learn() to save recomputing."""
        centroids = self.tasks.get(task)
        cosines = centroids.cosines(vec) if centroids is not None and centroids.used and vec.norm else None
        if self.samples(task) < self.min_samples:
            return None, cosines
        if cosines is None:
            return 1.0, None
        return min(1.0, max(0.0, 1.0 - float(cosines.max()))), cosines

    def learn(self, task: str, vec: SparseVector, cosines: np.ndarray | None = None) -> None:
        if not vec.norm:
            return
        centroids = self.tasks.get(task)
        if centroids is None:  # not setdefault: that would allocate the (prototypes x dims) arrays every call
            centroids = self.tasks[task] = TaskCentroids(self.dims, self.prototypes)
        if centroids.used == 0:
            row = 0
        else:
            cosines = centroids.cosines(vec) if cosines is None else cosines
            nearest = int(cosines.argmax())
            full = centroids.used == self.prototypes
            row = nearest if cosines[nearest] >= self.merge_cosine or full else centroids.used
        centroids.used = max(centroids.used, row + 1)
        centroids.add(row, vec)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        arrays = {}
        for task, c in self.tasks.items():
            arrays[f"sums:{task}"], arrays[f"counts:{task}"] = c.sums[: c.used], c.counts[: c.used]
        np.savez(temporary, tasks=np.array(list(self.tasks)), **arrays)
        os.replace(temporary, path)

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        with np.load(path) as data:
            for task in data["tasks"].tolist():
                sums, counts = data[f"sums:{task}"], data[f"counts:{task}"]
                if sums.shape[1] != self.dims or len(sums) > self.prototypes:
                    continue
                centroids = TaskCentroids(self.dims, self.prototypes)
                centroids.used = len(sums)
                centroids.sums[: len(sums)], centroids.counts[: len(sums)] = sums, counts
                centroids.norms[: len(sums)] = np.sqrt((sums * sums).sum(axis=1))
                self.tasks[task] = centroids
        return True
