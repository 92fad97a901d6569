"""Learned per-item routing: which pool will answer this item acceptably, and the cheapest that will.

A RoutingModel predicts, for every pool it knows, the probability that the pool's answer to an item is right,
from the item's own features, a whole batch at once in numpy:

* text: hashed word uni- and bigrams of the input (the novelty detector's hashing: words are runs of
  [a-z0-9'] in the lowercased UTF-8), weighted 1 + ln(count) times the word's inverse document frequency in the
  training items, the row scaled to unit length;
* one-hot keys in a second hashed block: the task type, the tenant, the label set, the value of the item's
  metadata under the model's `category_key` (e.g. an MMLU subject, a ticket queue) and a length bucket.

One logistic model per pool (weights: a column per pool). Its probabilities choose the pool; a per-pool Platt
scaling fitted out of fold turns them into calibrated ones (a calibrated 0.8 is right about 80% of the time on
items the model was not trained on), which say what the router expects: the expected accuracy, `--explain`.

Decision: the pools are kept cheapest first; an item goes to the cheapest pool whose predicted success is within
`margin` of the best pool's for that item (the model's own probabilities). With two pools that is "the strong pool when P(strong) - P(weak) >
margin", the ranking RouteLLM's routers threshold; the margin is calibrated on held-out items to the accuracy
target the model was fitted for (`modelyard routing fit --target`), and is the only knob.

Models are plain arrays and JSON (`routing.npz`, `routing.json`), never a pickle, in versioned folders
`<dir>/v<N>/` with a `CURRENT` pointer, like the student registry; training is `modelyard/ops/routing_fit.py`.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from streams.novelty import BIGRAM_MIX, SEPARATOR, WORD_BYTES, _substring_hashes

HASHING_VERSION = 1
MAX_CHARS = 2000
TEXT_DIMS = 2**18
KEY_DIMS = 2**12
VERSION = re.compile(r"^v(\d+)$")


class ItemKeys(NamedTuple):
    """The non-text features of one item (a tuple: hashed and compared in C, the key of a per-batch memo)."""

    task: str
    tenant: str
    labels: tuple[str, ...] | None
    category: str | None
    length: int  # log2 of the input's characters

    def tokens(self) -> list[str]:
        out = [f"task={self.task}", f"tenant={self.tenant}", f"length={self.length}"]
        if self.labels is not None:
            out += [
                f"labels={zlib.crc32(chr(31).join(sorted(self.labels)).encode()):08x}",
                f"label_count={len(self.labels)}",
            ]
        if self.category is not None:
            out.append(f"category={self.category}")
        return out


def key_columns(keys: ItemKeys, key_dims: int = KEY_DIMS) -> list[int]:
    return sorted({zlib.crc32(token.encode()) % key_dims for token in keys.tokens()})


def word_entries(texts: Sequence[str], dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every hashed word and word bigram of every text, repeats included."""
    joined = SEPARATOR.join(t[:MAX_CHARS].lower().encode() for t in texts) + SEPARATOR
    data = np.frombuffer(joined, dtype=np.uint8)
    edges = np.diff(np.r_[False, WORD_BYTES[data], False].astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    owners = np.cumsum(data == SEPARATOR[0])[starts]
    words = _substring_hashes(data, starts, ends)
    same = owners[1:] == owners[:-1]
    hashes = np.concatenate([words, (words[:-1] * BIGRAM_MIX + words[1:])[same]])
    rows = np.concatenate([owners, owners[:-1][same]])
    cols = ((hashes ^ (hashes >> np.uint64(29))) % np.uint64(dims)).astype(np.int64)
    return rows, cols


@dataclass(frozen=True)
class SparseRows:
    """A batch of feature rows as (row, column, value) entries, unique per (row, column)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    count: int

    def dot(self, weights: np.ndarray) -> np.ndarray:
        """(count x pools) = rows @ weights, by one bincount per pool."""
        out = np.empty((self.count, weights.shape[1]), dtype=np.float64)
        for p in range(weights.shape[1]):
            out[:, p] = np.bincount(
                self.rows, weights=self.values * weights[self.cols, p], minlength=self.count
            )
        return out


def text_rows(texts: Sequence[str], idf: np.ndarray) -> SparseRows:
    """TF-IDF rows (1 + ln count, times idf, unit length) of the texts over len(idf) hashed dimensions."""
    dims = len(idf)
    rows, cols = word_entries(texts, dims)
    weighted = idf[cols] > 0  # words the training items never shared add nothing: drop them before the sort
    rows, cols, counts = _count_pairs(rows[weighted], cols[weighted], dims, len(texts))
    values = (1.0 + np.log(counts)) * idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=len(texts)))
    values = values / np.maximum(norms[rows], 1e-12)
    return SparseRows(rows, cols, values, len(texts))


def _count_pairs(
    rows: np.ndarray, cols: np.ndarray, dims: int, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (row, column) pairs, sorted, and how often each occurs: one in-place sort of the pairs packed
    into one integer (32 bits while they fit: a batch of 5,000 rows over 2**18 columns does; about twice as fast
    as np.unique on 64 bits, the learned step's largest cost on long texts)."""
    keys = rows * dims + cols
    keys = keys.astype(np.uint32) if count * dims <= 2**32 else keys
    keys.sort()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.intp)
    counts = np.diff(np.r_[starts, len(keys)])
    unique = keys[starts].astype(np.int64)
    return unique // dims, unique % dims, counts


def key_rows(keys: Sequence[ItemKeys], offset: int, key_dims: int = KEY_DIMS) -> SparseRows:
    """One-hot key columns, shifted past the text block."""
    memo: dict[ItemKeys, list[int]] = {}
    rows, cols = [], []
    for i, k in enumerate(keys):
        found = memo.get(k)
        if found is None:
            found = memo[k] = key_columns(k, key_dims)
        rows += [i] * len(found)
        cols += found
    return SparseRows(
        np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64) + offset, np.ones(len(rows)), len(keys)
    )


@dataclass
class RoutingCard:
    """What a model version says about itself (routing.json)."""

    pools: list[str]  # cheapest first
    cost_per_item_usd: list[float]
    margin: float
    target: float | None
    category_key: str
    tasks: list[str]
    trained_on: int
    heldout: dict[str, Any] = field(default_factory=dict)
    text_dims: int = TEXT_DIMS
    key_dims: int = KEY_DIMS
    hashing: int = HASHING_VERSION
    version: str = ""


@dataclass(frozen=True)
class RoutedBatch:
    raw: np.ndarray  # (items x pools) the model's probabilities, which choose
    probabilities: np.ndarray  # (items x pools) calibrated
    choices: np.ndarray  # pool index per item


class RoutingModel:
    def __init__(
        self, card: RoutingCard, weights: np.ndarray, bias: np.ndarray, platt: np.ndarray, idf: np.ndarray
    ) -> None:
        self.card = card
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.bias = bias.astype(np.float64)
        self.platt = platt.astype(np.float64)  # (pools x 2): scale, shift of the logit
        self.idf = idf.astype(np.float64)
        self.tasks = frozenset(card.tasks)
        self._key_index: dict[ItemKeys, int] = {}
        self._key_logits = np.zeros((0, self.weights.shape[1]))

    def logits(self, texts: Sequence[str], keys: Sequence[ItemKeys]) -> np.ndarray:
        """Raw logistic scores (items x pools), before calibration."""
        return text_rows(texts, self.idf).dot(self.weights) + self._keyed(keys) + self.bias

    def _keyed(self, keys: Sequence[ItemKeys]) -> np.ndarray:
        """The key block's share of each item's logits: a fixed row per distinct ItemKeys, found by one dict
        lookup an item (rows computed once per new ItemKeys; the table is dropped past 65,536 of them)."""
        if len(self._key_index) > 65_536:
            self._key_index, self._key_logits = {}, self._key_logits[:0]
        ids = list(map(self._key_index.get, keys))
        if None in ids:
            new = list(dict.fromkeys(k for k, i in zip(keys, ids, strict=True) if i is None))
            start = len(self._key_logits)
            rows = key_rows(new, self.card.text_dims, self.card.key_dims).dot(self.weights)
            self._key_logits = np.vstack([self._key_logits, rows])
            self._key_index.update((k, start + n) for n, k in enumerate(new))
            ids = list(map(self._key_index.get, keys))
        return self._key_logits[np.array(ids, dtype=np.intp)]

    def scores(self, texts: Sequence[str], keys: Sequence[ItemKeys]) -> tuple[np.ndarray, np.ndarray]:
        """(raw, calibrated) P(the pool answers right), items x pools. The raw probabilities rank and choose
        (the per-pool Platt scalings would reorder items: measured, it costs MMLU 0.01 APGR); the calibrated ones
        are what the router expects to happen (the expected accuracy, `route --explain`)."""
        logits = self.logits(texts, keys)
        return _sigmoid(logits), _sigmoid(logits * self.platt[:, 0] + self.platt[:, 1])

    def predict(self, texts: Sequence[str], keys: Sequence[ItemKeys]) -> np.ndarray:
        """Calibrated P(the pool answers right), items x pools."""
        return self.scores(texts, keys)[1]

    def route(
        self, texts: Sequence[str], keys: Sequence[ItemKeys], margin: float | None = None
    ) -> RoutedBatch:
        raw, calibrated = self.scores(texts, keys)
        return RoutedBatch(raw, calibrated, choose(raw, self.card.margin if margin is None else margin))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / "routing.npz",
            weights=self.weights.astype(np.float32),
            bias=self.bias,
            platt=self.platt,
            idf=self.idf.astype(np.float32),
        )
        (directory / "routing.json").write_bytes(orjson.dumps(asdict(self.card), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, directory: Path) -> RoutingModel:
        """Raises ValueError (unreadable, or hashed another way) or OSError."""
        card = RoutingCard(**orjson.loads((directory / "routing.json").read_bytes()))
        if card.hashing != HASHING_VERSION:
            raise ValueError(
                f"{directory}: hashing version {card.hashing}, this router reads {HASHING_VERSION}"
            )
        with np.load(directory / "routing.npz", allow_pickle=False) as arrays:
            return cls(card, arrays["weights"], arrays["bias"], arrays["platt"], arrays["idf"])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def choose(probabilities: np.ndarray, margin: float) -> np.ndarray:
    """Per item, the first (cheapest) pool whose probability is within margin of the item's best pool."""
    good = probabilities >= probabilities.max(axis=1, keepdims=True) - margin
    return good.argmax(axis=1)


def item_keys(
    task: str,
    tenant: str,
    labels: Sequence[str] | None,
    metadata: Mapping[str, str],
    text: str,
    category_key: str,
) -> ItemKeys:
    return ItemKeys(
        task, tenant, tuple(labels) if labels else None, metadata.get(category_key), len(text).bit_length()
    )


class RoutingRegistry:
    """Versions under `<root>/v<N>/`, the current one named by `<root>/CURRENT` (replaced atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def register(self, model: RoutingModel) -> str:
        version = f"v{self._last() + 1}"
        model.card.version = version
        model.save(self.root / version)
        pointer = self.root / "CURRENT"
        temporary = pointer.with_suffix(".tmp")
        temporary.write_text(version + "\n")
        os.replace(temporary, pointer)
        return version

    def current(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def pointer_mtime(self) -> float | None:
        try:
            return (self.root / "CURRENT").stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def load_current(self) -> RoutingModel | None:
        version = self.current()
        return None if version is None else RoutingModel.load(self.root / version)

    def _last(self) -> int:
        names = (
            [m.group(1) for p in self.root.iterdir() if (m := VERSION.match(p.name))]
            if self.root.is_dir()
            else []
        )
        return max((int(n) for n in names), default=0)


@dataclass(frozen=True)
class Rerouted:
    index: int  # the item's position in the batch
    pool: str
    reason: str


class LearnedRouter:
    """The router's handle on the current routing model: reloaded when a new version is registered (checked
    every `reload_interval_s`), applied to a batch's decisions whose task it knows and whose rule-chosen pool is
    one of its pools (a rule that names another pool still wins)."""

    def __init__(self, root: Path, reload_interval_s: float = 30.0) -> None:
        self.registry = RoutingRegistry(root)
        self.reload_interval_s = reload_interval_s
        self._model: RoutingModel | None = None
        self._mtime: float | None = None
        self._checked = float("-inf")
        self.error: str | None = None

    def model(self, now: float) -> RoutingModel | None:
        if now - self._checked >= self.reload_interval_s:
            self._checked = now
            self._reload()
        return self._model

    def _reload(self) -> None:
        mtime = self.registry.pointer_mtime()
        if mtime == self._mtime:
            return
        try:
            self._model, self._mtime, self.error = self.registry.load_current(), mtime, None
        except (OSError, ValueError, KeyError, TypeError) as exc:  # keep serving the model already loaded
            self.error = f"routing model in {self.registry.root} not loaded: {exc}"

    def reroute(
        self, model: RoutingModel, tasks: Sequence[str], pools: Sequence[str], items: Sequence[Any]
    ) -> list[Rerouted]:
        """For the items (WorkItem or WorkItemStruct) whose task and current pool the model covers: its pool."""
        card = model.card
        covered = set(card.pools)
        chosen = [
            i
            for i, (task, pool) in enumerate(zip(tasks, pools, strict=True))
            if task in model.tasks and pool in covered
        ]
        if not chosen:
            return []
        texts = [items[i].input_text() for i in chosen]
        keys = [
            item_keys(
                tasks[i], items[i].tenant, items[i].params.labels, items[i].metadata, text, card.category_key
            )
            for i, text in zip(chosen, texts, strict=True)
        ]
        routed = model.route(texts, keys)
        best = routed.probabilities.max(axis=1)
        picked = routed.probabilities[np.arange(len(chosen)), routed.choices]
        return [
            Rerouted(
                i,
                card.pools[c],
                f"learned {card.version}: P(right) {p:.2f}, best pool {b:.2f}, margin {card.margin:.3f}",
            )
            for i, c, p, b in zip(
                chosen, routed.choices.tolist(), picked.tolist(), best.tolist(), strict=True
            )
        ]

    def explain(self, model: RoutingModel, task: str, pool: str, item: Any) -> list[str]:
        """What `modelyard route --explain` prints about the learned step."""
        card = model.card
        if task not in model.tasks or pool not in card.pools:
            return [
                f"learned router {card.version}: not applied (task {task} in {sorted(model.tasks)}? pool {pool} in {card.pools}?)"
            ]
        text = item.input_text()
        keys = item_keys(task, item.tenant, item.params.labels, item.metadata, text, card.category_key)
        routed = model.route([text], [keys])
        raw, calibrated, choice = routed.raw[0], routed.probabilities[0], int(routed.choices[0])
        lines = [
            f"learned router {card.version} (trained on {card.trained_on} items; margin {card.margin:.3f} "
            f"for target {card.target}; keys: {', '.join(keys.tokens())})"
        ]
        for k, name in enumerate(card.pools):
            within = raw[k] >= raw.max() - card.margin
            mark = "v" if k == choice else ("." if within else "x")
            lines.append(
                f"  {mark} {name}: P(right) {calibrated[k]:.3f} (model {raw[k]:.3f}), ~USD {card.cost_per_item_usd[k]:.6f} an item"
                f"{'' if within else f', more than {card.margin:.3f} below the best'}"
            )
        lines.append(f"  -> {card.pools[choice]}: the cheapest pool within {card.margin:.3f} of the best")
        return lines
