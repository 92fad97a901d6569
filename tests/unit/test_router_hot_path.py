"""The router's batch hot path: Kafka-compatible partitioning, batched novelty vectors, route_many == route."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

from modelyard.app import build_routing_policy
from modelyard.core.settings import load_settings
from schemas import TaskType
from streams.novelty import WORD, NoveltyDetector
from streams.partitioning import murmur2_many, partitions_for
from streams.policy import Source
from streams.rules import Condition, ItemFeatures
from tests.helpers import BATTERY


def test_murmur2_many_equals_kafkas_murmur2_for_every_length() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 70))) for _ in range(3000)] + [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"abcd",
    ]
    assert murmur2_many(keys).tolist() == [murmur2(k) for k in keys]


@pytest.mark.parametrize("count", [1, 4, 7, 64])
def test_partitions_match_the_default_partitioner(count: int) -> None:
    keys = [f"job-{n}".encode() for n in range(2000)]
    every = list(range(count))
    assert partitions_for(keys, count).tolist() == [DefaultPartitioner()(k, every, every) for k in keys]


def test_vectors_of_a_batch_equal_vectors_one_by_one() -> None:
    texts = ["Refund my card, please!", "", "naïve café\nline two", "x " * 1500, "order 42 order 42"]
    detector = NoveltyDetector(dims=256)
    together = detector.vectors(texts)
    for n, text in enumerate(texts):
        alone = detector.vectors([text])
        assert np.array_equal(together.counts[[n]].toarray(), alone.counts[[0]].toarray()) and together.norms[
            n
        ] == pytest.approx(alone.norms[0])


def test_vectors_hash_the_words_the_word_pattern_finds() -> None:
    """Case, punctuation and non-ASCII letters split and fold words exactly as WORD on the lowercased text."""
    detector = NoveltyDetector(dims=4096)
    for text in ["Refund, NOW!!", "naïve café's order #42", "tl;dr: it's fine"]:
        words = WORD.findall(text.lower())
        assert np.array_equal(
            detector.vectors([text]).counts.toarray(), detector.vectors([" ".join(words)]).counts.toarray()
        )
        unigrams_and_bigrams = len(words) + max(len(words) - 1, 0)
        assert detector.vectors([text]).counts.sum() == unigrams_and_bigrams


def test_learning_a_batch_clusters_like_learning_one_by_one() -> None:
    templates = [
        "my card was charged twice",
        "please summarise the meeting notes",
        "extract the invoice number and date",
    ]
    texts = [f"{templates[n % 3]} {n}" for n in range(90)]
    batch, single = NoveltyDetector(dims=512, min_samples=10), NoveltyDetector(dims=512, min_samples=10)
    batch.learn("t", batch.vectors(texts))
    for text in texts:
        single.learn("t", single.vectors([text]))
    assert batch.tasks["t"].used == single.tasks["t"].used == 3
    assert batch.samples("t") == single.samples("t") == 90
    assert (
        batch.score("t", "my card was charged twice 7")
        < 0.5
        < batch.score("t", "lattice gauge theory at finite temperature")
    )


def test_route_many_equals_route_one_at_a_time() -> None:
    values = []
    for n, (raw, _, _) in enumerate(BATTERY):
        values += [
            orjson.dumps(
                {"job_id": f"j{n}", "tenant": "t", "input": f"ticket {n}", "params": {"labels": ["a", "b"]}}
            ),
            raw,
        ]
    records = [(v, Source("jobs", 0, offset)) for offset, v in enumerate(values)]
    settings = load_settings()
    together = build_routing_policy(settings).route_many(records)
    single = build_routing_policy(load_settings())
    alone = [single.route(raw, source) for raw, source in records]
    assert [(o.topic, o.key) for o in together] == [(o.topic, o.key) for o in alone]
    assert sum(o.topic == settings.kafka.dead_letter_topic for o in together) == len(BATTERY)


def test_a_failing_batch_is_routed_again_one_record_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = build_routing_policy(load_settings())
    records = [
        (
            orjson.dumps({"job_id": f"j{n}", "tenant": "t", "input": "x", "task": "generation"}),
            Source("jobs", 0, n),
        )
        for n in range(3)
    ]
    real = policy.decide_many
    monkeypatch.setattr(
        policy,
        "decide_many",
        lambda items, now, learn=True: real(items, now, learn) if len(items) == 1 else 1 / 0,
    )
    assert [o.key for o in policy.route_many(records)] == [b"j0", b"j1", b"j2"]


CONDITIONS = [
    Condition(),
    Condition(task=[TaskType.CLASSIFICATION]),
    Condition(tenants=["acme"]),
    Condition(min_input_tokens=10),
    Condition(max_input_tokens=10),
    Condition(min_priority=5, max_priority=7),
    Condition(min_labels=2, max_labels=3),
    Condition(has_deadline=True),
    Condition(has_deadline=False),
    Condition(deadline_within_s=60),
]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_matches_agrees_with_first_failure(condition: Condition) -> None:
    now, rng = datetime(2026, 11, 24, tzinfo=UTC), random.Random(3)
    for _ in range(300):
        features = ItemFeatures(
            task_type=rng.choice(list(TaskType)),
            tenant=rng.choice(["acme", "globex"]),
            input_tokens=rng.randint(0, 20),
            priority=rng.randint(0, 9),
            label_count=rng.randint(0, 5),
            deadline=rng.choice([None, now + timedelta(seconds=30), now + timedelta(seconds=600)]),
        )
        assert condition.matches(features, now) == (condition.first_failure(features, now) is None)
