"""One frozen settings object per process: defaults < YAML file (MODELYARD_CONFIG) < environment (MODELYARD_*)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from modelyard.core.settings_services import (  # noqa: F401  (re-exported: the sections are imported from here)
    ENCODER_DIR,
    PROJECT_ROOT,
    ClickHouseSettings,
    KafkaSettings,
    LocalBrokerSettings,
    MetricsSettings,
    ProviderSettings,
    Section,
    SimulatorSettings,
    SlmServerSettings,
    StackSettings,
)
from modelyard.core.settings_stages import (  # noqa: F401
    BatchSettings,
    BudgetSettings,
    CachePolicy,
    CascadeSettings,
    CostSettings,
    DistillSettings,
    FallbackTarget,
    PoolSettings,
    ResultCacheSettings,
    RouterSettings,
    SchedulingSettings,
    ShadowAlertSettings,
    SinkSettings,
)
from schemas import TaskType


def _default_providers() -> dict[str, ProviderSettings]:
    return {
        "vllm": ProviderSettings(api="vllm"),
        "openai": ProviderSettings(api="openai"),
        "anthropic": ProviderSettings(api="anthropic"),
        "distilled": ProviderSettings(api="distilled"),
    }


def _default_pools() -> dict[str, PoolSettings]:
    return {
        "slm": PoolSettings(provider="vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct", concurrency=64),
        "frontier": PoolSettings(provider="anthropic", model="claude-sonnet-5", concurrency=32),
    }


def _default_routes() -> dict[TaskType, str]:
    return {
        TaskType.CLASSIFICATION: "slm",
        TaskType.EXTRACTION: "slm",
        TaskType.SUMMARISATION: "frontier",
        TaskType.GENERATION: "frontier",
        TaskType.OTHER: "frontier",
    }


def _merged(defaults: Mapping[str, Section], overrides: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    merged = {name: section.model_dump() for name, section in defaults.items()}
    for name, entry in (overrides or {}).items():
        entry = entry.model_dump() if isinstance(entry, BaseModel) else dict(entry)
        merged[name] = {**merged.get(name, {}), **entry}
    return merged


_STANDARD_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELYARD_", env_nested_delimiter="__", frozen=True, extra="forbid", yaml_file=None
    )

    app_id: str = "modelyard"
    state_dir: Path = Path(".modelyard")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    kafka: KafkaSettings = KafkaSettings()
    local_broker: LocalBrokerSettings = LocalBrokerSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    pools: dict[str, PoolSettings] = Field(default_factory=_default_pools)
    routes: dict[TaskType, str] = Field(default_factory=_default_routes)
    default_pool: str = "frontier"
    router: RouterSettings = RouterSettings()
    sink: SinkSettings = SinkSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    costs: CostSettings = CostSettings()
    metrics: MetricsSettings = MetricsSettings()
    distill: DistillSettings = DistillSettings()
    shadow_alert: ShadowAlertSettings = ShadowAlertSettings()
    slm_server: SlmServerSettings = SlmServerSettings()
    stack: StackSettings = StackSettings()
    result_cache: ResultCacheSettings = ResultCacheSettings()
    scheduling: SchedulingSettings = SchedulingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("MODELYARD_CONFIG")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if yaml_file:
            sources += (YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),)
        return sources

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        """Partial overrides (one env var, a YAML key) refine the default providers and pools instead of replacing them.

        OPENAI_API_KEY / ANTHROPIC_API_KEY count as the hosted providers' keys when none is configured."""
        if not isinstance(data, dict):
            return data
        providers = _merged(_default_providers(), data.get("providers"))
        for name, var in _STANDARD_KEY_VARS.items():
            if not providers[name].get("api_key") and os.environ.get(var):
                providers[name]["api_key"] = os.environ[var]
        return {**data, "providers": providers, "pools": _merged(_default_pools(), data.get("pools"))}

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        for name, pool in self.pools.items():
            if pool.provider not in self.providers:
                raise ValueError(f"pools.{name}.provider: unknown provider {pool.provider!r}")
            for fallback in pool.fallbacks:
                if fallback.provider not in self.providers:
                    raise ValueError(f"pools.{name}.fallbacks: unknown provider {fallback.provider!r}")
            self._check_cascade(name, pool.cascade)
            if pool.batch.enabled and self.providers[pool.provider].api not in ("openai", "anthropic"):
                raise ValueError(
                    f"pools.{name}.batch.enabled: provider {pool.provider!r} has no batch API (openai or anthropic only)"
                )
        named: dict[str, str] = {
            **{str(task): pool for task, pool in self.routes.items()},
            "default_pool": self.default_pool,
            "costs.downgrade_pool": self.costs.downgrade_pool,
        }
        for where, pool_name in named.items():
            if pool_name not in self.pools:
                raise ValueError(
                    f"{'routes.' if where in self.routes else ''}{where}: unknown pool {pool_name!r}"
                )
        return self

    def _check_cascade(self, name: str, cascade: CascadeSettings | None) -> None:
        """One level only: the pool escalated to must exist and must not escalate further (no loops)."""
        if cascade is None:
            return
        target = self.pools.get(cascade.to_pool)
        if target is None or cascade.to_pool == name:
            raise ValueError(f"pools.{name}.cascade.to_pool: {cascade.to_pool!r} is not another pool")
        if target.cascade is not None:
            raise ValueError(
                f"pools.{name}.cascade.to_pool: {cascade.to_pool!r} escalates too; cascades are one level"
            )

    @cached_property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def models_dir(self) -> Path:
        return self.distill.models_dir or self.state_dir / "models"

    @property
    def novelty_state_file(self) -> Path:
        return self.state_dir / f"{self.app_id}-novelty.npz"

    def pool_provider(self, pool: str) -> ProviderSettings:
        return self.providers[self.pools[pool].provider]

    def group_id(self, role: str) -> str:
        """A consumer group's id, app_id-prefixed: two deployments on one cluster never share a group."""
        return f"{self.app_id}.{role}"


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings; turns validation errors into one ConfigError line."""
    from pydantic import ValidationError

    from modelyard.core._exceptions import ConfigError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
