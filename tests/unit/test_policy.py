"""RoutingPolicy: tagging, rules, tenant overrides, novelty, validation outcomes (no Kafka)."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from modelyard.app import build_routing_policy
from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import load_settings
from schemas import Assignment, DeadLetter, TaskType, WorkItem
from streams.policy import RoutingPolicy, Source
from streams.rules import ItemFeatures, PolicyFile, RuleMemo, first_matching_rule
from streams.tagging import tag_task
from tests.helpers import BATTERY

SOURCE = Source("modelyard.jobs", 0, 7)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

POLICY = """
default_pool: frontier
rules:
  - {name: urgent, when: {min_priority: 8}, pool: frontier}
  - {name: tight-deadline, when: {deadline_within_s: 60}, pool: frontier}
  - {name: small-classification, when: {task: [classification], max_input_tokens: 500, max_labels: 10}, pool: slm}
  - {name: extraction, when: {task: [extraction]}, pool: slm}
tenants:
  globex:
    rules:
      - {name: globex-all-slm, when: {task: [summarisation]}, pool: slm}
  initech:
    default_pool: slm
novelty: {enabled: false}
"""


def item(**fields: object) -> WorkItem:
    return WorkItem.model_validate({"job_id": "j", "tenant": "acme", "input": "hello there", **fields})


@pytest.fixture
def policy(tmp_path: Path) -> RoutingPolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return build_routing_policy(load_settings(router={"policy_file": path, "reload_interval_s": 0.01}))


LABELS = {"labels": ["a", "b"]}


@pytest.mark.parametrize(
    ("fields", "pool", "rule"),
    [
        ({"task": "classification", "params": LABELS}, "slm", "small-classification"),
        ({"params": LABELS}, "slm", "small-classification"),
        ({"task": "classification", "params": LABELS, "priority": 9}, "frontier", "urgent"),
        ({"task": "classification", "params": LABELS, "input": "x" * 2004}, "frontier", "default"),
        (
            {"task": "classification", "params": {"labels": [str(i) for i in range(11)]}},
            "frontier",
            "default",
        ),
        (
            {
                "task": "classification",
                "params": LABELS,
                "deadline": (NOW + timedelta(seconds=30)).isoformat(),
            },
            "frontier",
            "tight-deadline",
        ),
        (
            {"task": "classification", "params": LABELS, "deadline": (NOW + timedelta(hours=3)).isoformat()},
            "slm",
            "small-classification",
        ),
        ({"params": {"json_schema": {"type": "object"}}}, "slm", "extraction"),
        ({"task": "summarisation"}, "frontier", "default"),
        ({"task": "summarisation", "tenant": "globex"}, "slm", "globex-all-slm"),
        ({"task": "generation", "tenant": "initech"}, "slm", "default"),
    ],
)
def test_policy_table(policy: RoutingPolicy, fields: dict, pool: str, rule: str) -> None:
    decision = policy.decide(item(**fields), now=NOW)
    assert (decision.pool, decision.rule) == (pool, rule)
    if rule not in ("default",):
        assert decision.checks[-1].rule == rule and decision.checks[-1].failure is None
    assert all(check.failure for check in decision.checks[:-1])


@pytest.mark.parametrize(
    ("fields", "task", "why"),
    [
        ({"task": "generation"}, TaskType.GENERATION, "hint"),
        ({"params": LABELS}, TaskType.CLASSIFICATION, "labels"),
        ({"params": {"json_schema": {"type": "object"}}}, TaskType.EXTRACTION, "json_schema"),
        ({"input": "Please summarise this thread for me"}, TaskType.SUMMARISATION, "summarise"),
        ({"input": "Write a haiku about queues"}, TaskType.GENERATION, "write"),
        ({"input": "Extract the invoice number"}, TaskType.EXTRACTION, "extract"),
        (
            {"input": [{"role": "user", "content": "Classify the sentiment of: great!"}]},
            TaskType.CLASSIFICATION,
            "classify",
        ),
        ({"input": "hello"}, TaskType.OTHER, "no hint"),
    ],
)
def test_task_tagging(fields: dict, task: TaskType, why: str) -> None:
    tagged, reason = tag_task(item(**fields))
    assert tagged is task and why in reason


def test_policy_reloads_on_change_and_keeps_old_when_invalid(policy: RoutingPolicy) -> None:
    path = policy.source.path
    assert policy.decide(item(task="summarisation"), now=NOW).pool == "frontier"
    path.write_text(POLICY.replace("default_pool: frontier\nrules:", "default_pool: slm\nrules:", 1))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    time.sleep(0.02)
    assert policy.decide(item(task="summarisation"), now=NOW).pool == "slm"
    path.write_text("default_pool: nowhere\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 20_000_000))
    time.sleep(0.02)
    assert policy.decide(item(task="summarisation"), now=NOW).pool == "slm"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("default_pool: nowhere\n", "unknown pools"),
        (
            "default_pool: slm\nrules: [{name: a, when: {min_priority: 12}, pool: slm}]\n",
            "rules.0.when.min_priority",
        ),
        ("default_pool: slm\nrules: [{name: a, pool: slm}, {name: a, pool: slm}]\n", "duplicate rule names"),
        ("default_pool: slm\nrules: [{name: a, when: {colour: red}, pool: slm}]\n", "colour"),
    ],
)
def test_invalid_policy_file_is_a_config_error_naming_the_field(
    tmp_path: Path, text: str, match: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        build_routing_policy(load_settings(router={"policy_file": path}))


def test_simple_routes_table_is_the_default_policy() -> None:
    policy = build_routing_policy(load_settings(routes={"classification": "frontier"}))
    assert policy.decide(item(params=LABELS)).pool == "frontier"


def test_unknown_task_type_bound_for_the_slm_is_novel() -> None:
    policy = build_routing_policy(load_settings(routes={"other": "slm"}))
    decision = policy.decide(item(input="hello"))
    assert (decision.pool, decision.rule, decision.novelty_score) == ("frontier", "novelty", 1.0)


def test_items_unlike_past_traffic_are_diverted_to_frontier() -> None:
    policy = build_routing_policy(load_settings())
    tickets = [
        "my card was charged twice this month",
        "refund the duplicate invoice please",
        "payment declined but money gone",
    ]
    for n in range(60):
        assert policy.decide(item(params=LABELS, input=f"{tickets[n % 3]} order {n}")).pool == "slm"
    familiar = policy.decide(item(params=LABELS, input="my card was charged twice again"))
    novel = policy.decide(
        item(params=LABELS, input="Quantum chromodynamics lattice gauge simulation at finite temperature")
    )
    assert familiar.pool == "slm" and familiar.novelty_score is not None and familiar.novelty_score < 0.75
    assert novel.pool == "frontier" and novel.rule == "novelty" and novel.novelty_score >= 0.75


def test_novelty_state_round_trips(tmp_path: Path) -> None:
    policy = build_routing_policy(load_settings())
    for n in range(60):
        policy.decide(item(params=LABELS, input=f"charged twice for order {n}"))
    policy.save_novelty(tmp_path / "n.npz")
    fresh = build_routing_policy(load_settings())
    assert fresh.novelty.load(tmp_path / "n.npz")
    assert (
        fresh.decide(item(params=LABELS, input="charged twice for order 7"), learn=False).novelty_score
        is not None
    )


def test_valid_record_goes_to_its_pool_topic_keyed_by_job_id() -> None:
    out = build_routing_policy(load_settings()).route(
        orjson.dumps({"job_id": "j9", "tenant": "t", "input": "x", "task": "generation"}), SOURCE
    )
    assert (out.topic, out.key) == ("modelyard.pool.frontier", b"j9")
    assignment = Assignment.model_validate_json(out.value)
    assert (assignment.item.job_id, assignment.rule, assignment.task_reason) == (
        "j9",
        "task-generation",
        "hint",
    )


@pytest.mark.parametrize(("raw", "reason", "field"), BATTERY)
def test_malformed_records_go_to_dead_letter_with_reason_and_source(
    raw: bytes | None, reason: str, field: str | None
) -> None:
    out = build_routing_policy(load_settings()).route(raw, SOURCE)
    letter = DeadLetter.model_validate_json(out.value)
    assert out.topic == "modelyard.deadletter"
    assert (letter.reason, letter.field) == (reason, field)
    assert len(out.value) < 1_000_000 and letter.original_bytes == len(raw or b"")
    assert letter.original_truncated == (len(raw or b"") > 512 * 1024)
    assert (letter.stage, letter.source_topic, letter.source_partition, letter.source_offset) == (
        "router",
        "modelyard.jobs",
        0,
        7,
    )


def test_unknown_tenant_and_duplicates_are_dead_lettered_but_replays_are_not() -> None:
    policy = build_routing_policy(load_settings(router={"known_tenants": ["acme"]}))
    good = orjson.dumps({"job_id": "d1", "tenant": "acme", "input": "x"})
    assert policy.route(good, Source("jobs", 0, 1)).topic.startswith("modelyard.pool.")
    assert policy.route(good, Source("jobs", 0, 1)).topic.startswith(
        "modelyard.pool."
    )  # replay of the same offset
    duplicate = DeadLetter.model_validate_json(policy.route(good, Source("jobs", 0, 2)).value)
    assert (duplicate.reason, duplicate.field) == ("duplicate_job_id", "job_id")
    stranger = DeadLetter.model_validate_json(
        policy.route(orjson.dumps({"job_id": "d2", "tenant": "evil", "input": "x"}), SOURCE).value
    )
    assert (stranger.reason, stranger.field) == ("unknown_tenant", "tenant")
    assert (duplicate.job_id, stranger.job_id) == ("d1", "d2")  # valid job ids travel with the letter


def test_shadow_sampling_copies_a_share_of_slm_items_to_the_frontier() -> None:
    policy = build_routing_policy(load_settings(router={"shadow_share": 0.25}))
    outs = [
        policy.route(
            orjson.dumps({"job_id": f"s{n}", "tenant": "acme", "input": "x", "params": LABELS}),
            Source("jobs", 0, n),
        )
        for n in range(400)
    ]
    shadows = [o.shadow for o in outs if o.shadow is not None]
    assert 60 < len(shadows) < 140 and all(o.topic == "modelyard.pool.slm" for o in outs)
    first = Assignment.model_validate_json(shadows[0].value)
    assert (shadows[0].topic, first.pool, first.rule, first.item.tenant) == (
        "modelyard.pool.frontier",
        "frontier",
        "shadow",
        "shadow",
    )
    assert (
        first.item.job_id == "shadow:" + first.item.metadata["shadow_of"]
        and first.item.metadata["tenant"] == "acme"
    )
    frontier = policy.route(
        orjson.dumps({"job_id": "g1", "tenant": "acme", "input": "x", "task": "generation"}),
        Source("jobs", 0, 999),
    )
    assert frontier.shadow is None


MEMO_POLICY = POLICY.replace(
    "  - {name: tight-deadline, when: {deadline_within_s: 60}, pool: frontier}\n", ""
).replace(
    "  - {name: extraction,",
    "  - {name: mid-size, when: {min_input_tokens: 100, max_input_tokens: 200, min_labels: 3}, pool: slm}\n  - {name: extraction,",
)


def test_rule_memo_picks_the_same_rule_as_trying_every_rule() -> None:
    policy = PolicyFile.model_validate(yaml.safe_load(MEMO_POLICY))
    memo, rng = RuleMemo(policy), random.Random(3)
    assert memo.enabled and memo.token_cuts == [100, 201, 501] and memo.label_cuts == [3, 11]
    for _ in range(5000):
        f = ItemFeatures(
            rng.choice(list(TaskType)),
            rng.choice(["acme", "globex", "initech"]),
            rng.randint(0, 700),
            rng.randint(0, 9),
            rng.randint(0, 14),
            rng.choice([None, NOW]),
        )
        assert memo.first_match(f, NOW) is first_matching_rule(policy, f, NOW)
    assert len(memo._rules) < 5000  # classes, not items


def test_rule_memo_is_off_for_clock_dependent_rules() -> None:
    assert not RuleMemo(PolicyFile.model_validate(yaml.safe_load(POLICY))).enabled
