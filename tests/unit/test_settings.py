from pathlib import Path

import pytest
from pydantic import ValidationError

from modelyard.core._exceptions import ConfigError
from modelyard.core.settings import load_settings


def test_env_overrides_one_field_and_keeps_other_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_POOLS__SLM__CONCURRENCY", "3")
    settings = load_settings()
    assert settings.pools["slm"].concurrency == 3
    assert settings.pools["slm"].provider == "vllm"
    assert settings.pools["frontier"].model == "claude-sonnet-5"


def test_yaml_file_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "modelyard.yaml"
    config.write_text("kafka:\n  topic_prefix: fromyaml\n  partitions: 8\nsink:\n  batch_size: 10\n")
    monkeypatch.setenv("MODELYARD_CONFIG", str(config))
    monkeypatch.setenv("MODELYARD_KAFKA__PARTITIONS", "2")
    settings = load_settings()
    assert (settings.kafka.topic_prefix, settings.kafka.partitions, settings.sink.batch_size) == (
        "fromyaml",
        2,
        10,
    )


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.app_id = "x"  # type: ignore[misc]


def test_standard_api_key_variables_select_hosted_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    settings = load_settings()
    assert settings.providers["anthropic"].mode == "hosted"
    assert settings.providers["vllm"].mode == "simulator"
    assert "sk-ant-secret-value" not in repr(settings) and "sk-ant-secret-value" not in str(
        settings.model_dump()
    )


def test_invalid_setting_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_KAFKA__PARTITIONS", "zero")
    with pytest.raises(ConfigError, match="kafka.partitions"):
        load_settings()


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    from modelyard.local.broker import _cluster_id

    ids = [_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids) and {len(i) for i in ids} == {22}
