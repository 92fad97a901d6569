"""Pool settings for fallbacks and the cascade, and the cascade decision itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import CascadeSettings, load_settings
from schemas import Result, ResultStatus, TaskType
from workers.pools.cascade import needs_escalation


def test_fallbacks_accept_shorthand_and_objects_and_check_providers() -> None:
    settings = load_settings(
        pools={"frontier": {"fallbacks": ["openai:gpt-5-mini", {"provider": "vllm", "model": "org/m:1"}]}}
    )
    assert [(f.provider, f.model) for f in settings.pools["frontier"].fallbacks] == [
        ("openai", "gpt-5-mini"),
        ("vllm", "org/m:1"),
    ]
    with pytest.raises(ConfigError, match="fallbacks"):
        load_settings(pools={"frontier": {"fallbacks": ["nosuch:model"]}})


def test_fallbacks_and_rate_limits_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_POOLS__FRONTIER__FALLBACKS", '["openai:gpt-5-mini"]')
    monkeypatch.setenv("MODELYARD_PROVIDERS__ANTHROPIC__RPM", "600")
    settings = load_settings()
    assert settings.pools["frontier"].fallbacks[0].model == "gpt-5-mini"
    assert settings.providers["anthropic"].rpm == 600 and settings.providers["anthropic"].tpm is None


def test_cascade_must_name_another_pool_one_level_deep() -> None:
    ok = load_settings(
        pools={"slm": {"cascade": {"to_pool": "frontier", "min_confidence": {"classification": 0.6}}}}
    )
    assert ok.pools["slm"].cascade.min_confidence == {TaskType.CLASSIFICATION: 0.6}
    with pytest.raises(ConfigError, match="cascade"):
        load_settings(pools={"slm": {"cascade": {"to_pool": "slm"}}})
    with pytest.raises(ConfigError, match="min_confidence"):
        load_settings(
            pools={"slm": {"cascade": {"to_pool": "frontier", "min_confidence": {"classification": 1.5}}}}
        )
    with pytest.raises(ConfigError, match="cascade"):
        load_settings(
            pools={"slm": {"cascade": {"to_pool": "frontier"}}, "frontier": {"cascade": {"to_pool": "slm"}}}
        )


def result(
    confidence: float | None, status: ResultStatus = ResultStatus.OK, task: TaskType = TaskType.CLASSIFICATION
) -> Result:
    return Result(
        job_id="j",
        attempt=1,
        tenant="t",
        task_type=task,
        pool="slm",
        provider="vllm",
        model="m",
        status=status,
        confidence=confidence,
        latency_ms=1,
        completed_at=datetime.now(UTC),
    )


def test_escalates_only_ok_answers_below_their_task_threshold() -> None:
    cascade = CascadeSettings(to_pool="frontier", min_confidence={TaskType.CLASSIFICATION: 0.6})
    assert needs_escalation(cascade, result(0.59))
    assert not needs_escalation(cascade, result(0.6))
    assert not needs_escalation(cascade, result(None))  # nothing to judge by
    assert not needs_escalation(cascade, result(0.1, ResultStatus.ERROR))
    assert not needs_escalation(cascade, result(0.1, task=TaskType.EXTRACTION))  # no threshold for the task
    assert not needs_escalation(None, result(0.1))


def test_only_ok_error_and_expired_are_final() -> None:
    finals = {s for s in ResultStatus if s.is_final}
    assert finals == {ResultStatus.OK, ResultStatus.ERROR, ResultStatus.EXPIRED}


def test_cascade_from_environment_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MODELYARD_POOLS__SLM__CASCADE", '{"to_pool": "frontier", "min_confidence": {"classification": 0.7}}'
    )
    assert load_settings().pools["slm"].cascade.min_confidence[TaskType.CLASSIFICATION] == 0.7
