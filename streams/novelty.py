"""NoveltyDetector: how unlike an item is from the SLM traffic of its task so far.

Items become hashed word uni+bigram vectors (stable polynomial hashing, sparse), a whole batch at a time. Each task keeps up to `prototypes`
centroids, learned online by leader clustering: an item joins its nearest centroid when their cosine is at
least `merge_cosine`, else it starts a new one (or joins the nearest when all are taken). Recurring kinds of
work (ticket templates, review styles) each get a centroid. Score = 1 - the best cosine, in [0, 1]; None
until the task has `min_samples` items. Centroids persist to a file so restarts and
`modelyard route --explain` see them. Within one batch, scores use the centroids as of the batch's start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.sparse import csr_matrix

WORD = re.compile(r"[a-z0-9']+")
MAX_CHARS = 2000


HASHING_VERSION = 2  # saved centroids from another hashing scheme are ignored
BIGRAM_MIX = np.uint64(0x9E3779B97F4A7C15)
SEPARATOR = b"\xff"
WORD_BYTES = np.zeros(256, dtype=bool)
WORD_BYTES[[*range(ord("a"), ord("z") + 1), *range(ord("0"), ord("9") + 1), ord("'")]] = True
HASH_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2**64
HASH_BASE_INVERSE = pow(HASH_BASE, -1, 2**64)


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2**64."""
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


class _PowerTables:
    """HASH_BASE**i and its inverse**i for i < n, grown by doubling (a batch's bytes would recompute them)."""

    def __init__(self) -> None:
        self.forward = self.inverse = np.ones(0, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.forward) < n:
            size = max(n, 2 * len(self.forward), 1 << 16)
            self.forward, self.inverse = _powers(HASH_BASE, size), _powers(HASH_BASE_INVERSE, size)
        return self.forward[:n], self.inverse[:n]


_POWERS = _PowerTables()


def _substring_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Position-independent polynomial hash of each data[start:end], modulo 2**64, all at once."""
    forward, inverse = _POWERS.upto(len(data))
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum((data.astype(np.uint64) + np.uint64(1)) * forward, out=prefix[1:])
    return (prefix[ends] - prefix[starts]) * inverse[starts]


class Vectors(NamedTuple):
    """Hashed word uni+bigram counts of a batch of texts: sparse (texts x dims) counts and each row's L2 norm,
    plus the same counts as entries (text, dimension), repeats allowed, for cheap sparse updates."""

    counts: csr_matrix
    norms: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


class TaskCentroids:
    """Sums of unit vectors per centroid (rows), their counts, and row norms kept current."""

    def __init__(self, dims: int, capacity: int) -> None:
        self.sums = np.zeros((capacity, dims), dtype=np.float64)
        self.norms = np.zeros(capacity, dtype=np.float64)
        self.counts = np.zeros(capacity, dtype=np.int64)
        self.used = 0

    def cosines(self, vecs: Vectors, texts: np.ndarray | None = None) -> np.ndarray:
        """(texts x used centroids) cosine matrix, for all texts or the given indices."""
        counts, norms = (
            (vecs.counts, vecs.norms) if texts is None else (vecs.counts[texts], vecs.norms[texts])
        )
        dots = counts @ self.sums[: self.used].T.astype(np.float32)
        return dots / np.maximum(np.outer(norms, self.norms[: self.used]), 1e-12)

    def add(self, vecs: Vectors, texts: np.ndarray, targets: np.ndarray) -> None:
        """Add the unit vector of each text in `texts` to centroid `targets[i]`: one bincount over the entries."""
        capacity, dims = self.sums.shape
        target_of = np.full(len(vecs.norms), -1, dtype=np.intp)
        target_of[texts] = targets
        chosen = target_of[vecs.rows] >= 0
        rows, cols = vecs.rows[chosen], vecs.cols[chosen]
        delta = np.bincount(
            target_of[rows] * dims + cols, weights=1.0 / vecs.norms[rows], minlength=capacity * dims
        )
        self.sums += delta.reshape(capacity, dims)
        self.counts += np.bincount(targets, minlength=capacity)
        touched = np.unique(targets)
        self.norms[touched] = np.sqrt((self.sums[touched] ** 2).sum(axis=1))


class NoveltyDetector:
    def __init__(
        self, dims: int = 1024, min_samples: int = 50, prototypes: int = 64, merge_cosine: float = 0.5
    ) -> None:
        self.dims = dims
        self.min_samples = min_samples
        self.prototypes = prototypes
        self.merge_cosine = merge_cosine
        self.tasks: dict[str, TaskCentroids] = {}

    def vectors(self, texts: list[str]) -> Vectors:
        """All texts hashed at once, in numpy: words (runs of [a-z0-9'] in the lowercased UTF-8 bytes, the
        words the WORD pattern finds) hash by prefix sums, each bigram mixes its two words' hashes."""
        joined = SEPARATOR.join(t[:MAX_CHARS].lower().encode() for t in texts) + SEPARATOR
        data = np.frombuffer(joined, dtype=np.uint8)
        edges = np.diff(np.r_[False, WORD_BYTES[data], False].astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        owners = np.cumsum(data == SEPARATOR[0])[starts]  # which text each word is in (0xFF is never UTF-8)
        words = _substring_hashes(data, starts, ends)
        same = owners[1:] == owners[:-1]
        hashes = np.concatenate([words, (words[:-1] * BIGRAM_MIX + words[1:])[same]])
        rows = np.concatenate([owners, owners[:-1][same]])
        cols = ((hashes ^ (hashes >> np.uint64(29))) % np.uint64(self.dims)).astype(np.intp)
        counts = csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(texts), self.dims)
        )
        counts.sum_duplicates()  # a dense (texts x dims) matrix would cost more than the hashing, in memory traffic
        squares = np.bincount(
            np.repeat(np.arange(len(texts)), np.diff(counts.indptr)),
            weights=counts.data.astype(np.float64) ** 2,
            minlength=len(texts),
        )
        return Vectors(counts, np.sqrt(squares), rows, cols)

    def samples(self, task: str) -> int:
        centroids = self.tasks.get(task)
        return int(centroids.counts.sum()) if centroids else 0

    def scores(self, task: str, vecs: Vectors) -> tuple[list[float | None], np.ndarray | None]:
        """Score per text (1 - best cosine to the task's centroids, None while the task has too few samples)
        and the cosine matrix, which learn() reuses."""
        centroids = self.tasks.get(task)
        cosines = centroids.cosines(vecs) if centroids is not None and centroids.used else None
        if self.samples(task) < self.min_samples:
            return [None] * len(vecs.norms), cosines
        if cosines is None:
            return [1.0] * len(vecs.norms), None
        best = np.where(vecs.norms > 0, cosines.max(axis=1), 0.0)
        return np.clip(1.0 - best, 0.0, 1.0).tolist(), cosines

    def score(self, task: str, text: str) -> float | None:
        return self.scores(task, self.vectors([text]))[0][0]

    def learn(
        self, task: str, vecs: Vectors, cosines: np.ndarray | None = None, texts: np.ndarray | None = None
    ) -> None:
        """Leader clustering, a batch at a time, on all texts or the given indices (with `cosines` their rows
        of scores()): texts close to a centroid (cosine >= merge_cosine, or every centroid taken) join their
        nearest in one step; the first of the others starts a new centroid, and the rest are compared again
        (at most `prototypes` rounds)."""
        texts = np.arange(len(vecs.norms)) if texts is None else np.asarray(texts, dtype=np.intp)
        nonzero = vecs.norms[texts] > 0
        pending = texts[nonzero]
        centroids = self.tasks.get(task)
        if centroids is None:  # not setdefault: that would allocate the (prototypes x dims) arrays every call
            centroids = self.tasks[task] = TaskCentroids(self.dims, self.prototypes)
        cosines = cosines[nonzero] if cosines is not None and cosines.shape[1] == centroids.used else None
        while len(pending):
            if cosines is None:
                cosines = centroids.cosines(vecs, pending) if centroids.used else np.zeros((len(pending), 0))
            close = self._close(centroids, cosines)
            if close.any():
                centroids.add(vecs, pending[close], cosines[close].argmax(axis=1))
            rest = pending[~close]
            if len(rest):
                centroids.used += 1
                centroids.add(vecs, rest[:1], np.array([centroids.used - 1]))
            pending, cosines = rest[1:], None

    def _close(self, centroids: TaskCentroids, cosines: np.ndarray) -> np.ndarray:
        if centroids.used == self.prototypes:
            return np.ones(len(cosines), dtype=bool)
        if not cosines.shape[1]:
            return np.zeros(len(cosines), dtype=bool)
        return cosines.max(axis=1) >= self.merge_cosine

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npz")
        arrays = {}
        for task, c in self.tasks.items():
            arrays[f"sums:{task}"], arrays[f"counts:{task}"] = c.sums[: c.used], c.counts[: c.used]
        np.savez(temporary, tasks=np.array(list(self.tasks)), hashing=np.array(HASHING_VERSION), **arrays)
        os.replace(temporary, path)

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        with np.load(path) as data:
            if "hashing" not in data or int(data["hashing"]) != HASHING_VERSION:
                return False
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
