"""The result cache's key (what counts as an identical request, and whose), its bounds and TTL, and the
routing policy's opt-in."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from modelyard.app import build_routing_policy
from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import CachePolicy, ResultCacheSettings, load_settings
from schemas import Assignment, TaskType, WorkItem
from schemas.cache import CacheDirective, CacheEntry
from schemas.result import UsageStruct
from streams.admission import Source
from streams.cache_policy import CacheDirectives
from streams.rules import load_policy_file
from workers.pools.result_cache import ResultCache, request_key

TARGET = ("vllm", "small-model", 256)


def assignment(tenant: str = "acme", scope: str = "tenant", **item: object) -> Assignment:
    fields = {
        "job_id": "j",
        "tenant": tenant,
        "input": "I was charged twice",
        "params": {"labels": ["a", "b"]},
    }
    return Assignment(
        item=WorkItem(**(fields | item)),  # type: ignore[arg-type]
        task_type=TaskType.CLASSIFICATION,
        task_reason="hint",
        pool="slm",
        reason="r",
        routed_at=datetime.now(UTC),
        cache=CacheDirective(ttl_s=60, scope=scope),  # type: ignore[arg-type]
    )


def key(a: Assignment, target: tuple[str, str, int] = TARGET) -> str | None:
    return request_key(a, *target)


def test_identical_requests_share_a_key_after_normalisation() -> None:
    base = key(assignment())
    assert key(assignment(job_id="other")) == base
    assert key(assignment(input="  I was \tcharged\n twice ")) == base
    assert key(assignment(input="Cafe\u0301")) == key(assignment(input="Caf\u00e9"))  # NFC


@pytest.mark.parametrize(
    "change",
    [
        {"input": "I was charged three times"},
        {"input": "i was charged twice"},
        {"params": {"labels": ["b", "a"]}},
        {"params": {"labels": ["a", "b"], "instructions": "Answer tersely"}},
        {"params": {"labels": ["a", "b"], "max_output_tokens": 3}},
        {"input": [{"role": "user", "content": "I was charged twice"}]},
    ],
)
def test_any_other_difference_is_another_request(change: dict[str, object]) -> None:
    assert key(assignment(**change)) != key(assignment())


def test_the_model_and_provider_are_part_of_the_key() -> None:
    assert key(assignment(), ("vllm", "other-model", 256)) != key(assignment())
    assert key(assignment(), ("openai", "small-model", 256)) != key(assignment())


def test_tenants_never_share_a_key_unless_both_share_the_task() -> None:
    assert key(assignment("acme")) != key(assignment("globex"))
    assert key(assignment("acme", "shared")) == key(assignment("globex", "shared"))
    assert key(assignment("acme", "shared")) != key(assignment("globex"))


def test_no_directive_no_key() -> None:
    assert key(assignment().model_copy(update={"cache": None})) is None


def entry(output: str = "billing", stored_at: float | None = None) -> CacheEntry:
    return CacheEntry(
        output,
        0.9,
        "j0",
        1,
        "vllm",
        "small-model",
        UsageStruct(input_tokens=10, output_tokens=1),
        False,
        "2026-01-01T00:00:00+00:00",
        time.time() if stored_at is None else stored_at,
    )


def test_entries_older_than_the_ttl_are_not_used() -> None:
    cache = ResultCache(ResultCacheSettings(), max_age_s=86_400)
    cache.put("k", entry(stored_at=time.time() - 100))
    assert cache.get("k", ttl_s=60, now=time.time()) is None
    assert cache.get("k", ttl_s=600, now=time.time()) is not None


def test_memory_is_bounded_by_entries_and_bytes_least_recently_used_first() -> None:
    cache = ResultCache(ResultCacheSettings(max_entries=3, max_bytes=9_700), max_age_s=86_400)
    for n in range(4):
        cache.put(f"k{n}", entry())
        cache.get("k0", 60, time.time())  # k0 stays recent
    assert set(cache.entries) == {"k0", "k2", "k3"}
    cache.put("big", entry("x" * 9_000))
    assert cache.bytes <= 9_700 and "big" in cache.entries and len(cache) == 2


def test_answers_longer_than_the_limit_are_not_cached() -> None:
    cache = ResultCache(ResultCacheSettings(max_output_chars=10), max_age_s=86_400)
    cache.put("k", entry("x" * 11))
    assert len(cache) == 0


def test_policy_opt_in_per_task_and_tenant(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "default_pool: frontier\n"
        "cache: {tasks: [classification, extraction], shareable: [classification], ttl_s: 3600}\n"
        "tenants:\n  globex: {cache: {tasks: [extraction]}}\n  initech: {cache: {tasks: []}}\n"
    )
    directives = CacheDirectives(load_policy_file(path, {"frontier", "slm"}))
    assert orjson.loads(orjson.dumps(directives.for_item("acme", TaskType.CLASSIFICATION))) == {  # type: ignore[union-attr]
        "ttl_s": 3600.0,
        "scope": "shared",
    }
    assert orjson.loads(orjson.dumps(directives.for_item("acme", TaskType.EXTRACTION)))["scope"] == "tenant"  # type: ignore[union-attr]
    assert directives.for_item("acme", TaskType.GENERATION) is None
    assert (
        directives.for_item("globex", TaskType.CLASSIFICATION) is None
    )  # its own section replaces the global
    assert directives.for_item("initech", TaskType.EXTRACTION) is None  # opted out


def test_a_shareable_task_must_be_cached() -> None:
    with pytest.raises(ValueError, match="shareable"):
        CachePolicy(tasks=[TaskType.EXTRACTION], shareable=[TaskType.CLASSIFICATION])


def test_router_stamps_opted_in_assignments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_ROUTER__CACHE__TASKS", '["classification"]')
    policy = build_routing_policy(load_settings())
    item = {"job_id": "j", "tenant": "acme", "input": "x", "params": {"labels": ["a", "b"]}}
    out = policy.route(orjson.dumps(item), Source("jobs", 0, 1))
    routed = Assignment.model_validate_json(out.value)
    assert routed.cache == CacheDirective(ttl_s=86_400, scope="tenant")
    other = policy.route(
        orjson.dumps({**item, "job_id": "k", "params": {}, "task": "generation"}), Source("jobs", 0, 2)
    )
    assert Assignment.model_validate_json(other.value).cache is None


def test_an_invalid_cache_section_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("default_pool: frontier\ncache: {tasks: [classification], ttl_s: 0}\n")
    with pytest.raises(ConfigError, match="cache.ttl_s"):
        load_policy_file(path, {"frontier"})
