"""One frozen settings object per process: defaults < YAML file (MODELYARD_CONFIG) < environment (MODELYARD_*)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from schemas import TaskType

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "modelyard"
    partitions: int = Field(default=4, ge=1)
    pool_partitions: dict[str, int] = Field(default_factory=dict, description="Per-pool partition counts.")
    replication_factor: int = Field(default=1, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    session_timeout_ms: int = Field(default=10_000, ge=1_000)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def jobs_topic(self) -> str:
        return self.topic("jobs")

    @property
    def results_topic(self) -> str:
        return self.topic("results")

    @property
    def dead_letter_topic(self) -> str:
        return self.topic("deadletter")

    def pool_topic(self, pool: str) -> str:
        return self.topic(f"pool.{pool}")

    def client_options(self) -> dict[str, Any]:
        """Security options shared by every aiokafka client."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return options


class LocalBrokerSettings(Section):
    home: Path = PROJECT_ROOT / "infra" / "kafka"
    data_dir: Path = Path(".modelyard/kafka")
    heap: str = "512m"
    start_timeout_s: float = 90.0


class ClickHouseSettings(Section):
    dsn: str = "chdb://.modelyard/chdb"
    password: SecretStr | None = None
    database: str = "default"


class ProviderSettings(Section):
    api: Literal["vllm", "openai", "anthropic"] = Field(
        description="Wire protocol: vllm is OpenAI's plus vLLM's structured_outputs; openai; anthropic."
    )
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    @property
    def mode(self) -> Literal["endpoint", "hosted", "simulator"]:
        """endpoint: an explicit base_url (vLLM, a proxy); hosted: the real API with a key; else the simulator."""
        if self.base_url:
            return "endpoint"
        return "hosted" if self.api_key else "simulator"


class PoolSettings(Section):
    provider: str
    model: str
    concurrency: int = Field(default=32, ge=1, le=4096)
    max_output_tokens: int = Field(default=256, ge=1)


class RouterSettings(Section):
    policy_file: Path | None = Field(default=None, description="Routing-policy YAML; without it, `routes` is the policy.")
    reload_interval_s: float = Field(default=1.0, gt=0, description="How often the policy file's mtime is checked.")
    known_tenants: list[str] | None = Field(default=None, description="When set, other tenants are dead-lettered.")
    dedup_window_s: float = Field(default=600.0, ge=0)
    dedup_max_entries: int = Field(default=1_000_000, ge=0)
    novelty_dims: int = Field(default=1024, ge=16)
    novelty_save_interval_s: float = Field(default=30.0, gt=0)


class SinkSettings(Section):
    batch_size: int = Field(default=2000, ge=1)
    flush_interval_s: float = Field(default=0.5, gt=0)
    retry_backoff_s: float = Field(default=1.0, gt=0)


class SimulatorSettings(Section):
    host: str = "127.0.0.1"
    port: int = 8765
    latency_ms: float = 20.0
    jitter_ms: float = 10.0
    rate_429: float = Field(default=0.0, ge=0, le=1)
    rate_5xx: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = 0.2
    seed: int = 7

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class MetricsSettings(Section):
    host: str = Field(default="0.0.0.0", description="Where /metrics, /healthz and /readyz listen.")
    port: int = Field(default=0, ge=0, le=65535, description="0 disables the endpoints.")
    lag_interval_s: float = Field(default=10.0, gt=0, description="How often a consumer's lag is measured.")


def _default_providers() -> dict[str, ProviderSettings]:
    return {
        "vllm": ProviderSettings(api="vllm"),
        "openai": ProviderSettings(api="openai"),
        "anthropic": ProviderSettings(api="anthropic"),
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


def _merged(defaults: dict[str, Section], overrides: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
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
    metrics: MetricsSettings = MetricsSettings()
    prices_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource, file_secret_settings: PydanticBaseSettingsSource,
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
        for task, pool in {**self.routes, "default_pool": self.default_pool}.items():
            if pool not in self.pools:
                raise ValueError(f"routes.{task}: unknown pool {pool!r}")
        return self

    @cached_property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def novelty_state_file(self) -> Path:
        return self.state_dir / f"{self.app_id}-novelty.npz"

    def pool_provider(self, pool: str) -> ProviderSettings:
        return self.providers[self.pools[pool].provider]


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings; turns validation errors into one ConfigError line."""
    from pydantic import ValidationError

    from modelyard._exceptions import ConfigError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
