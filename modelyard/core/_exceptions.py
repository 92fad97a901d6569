"""The modelyard exception tree: every error modelyard raises on purpose, at the bottom of the import graph.

ModelyardError
├── ConfigError              bad or missing configuration
├── InvalidInput             a work item or file line failed validation (carries the field)
├── BrokerError              Kafka unreachable, a broker that failed to start, a request Kafka refused
├── ProviderError            a model call failed after the client's own retries (carries retryable)
│   └── RateLimited          the provider asked us to wait (carries retry_after, in seconds)
├── StorageError             ClickHouse unreachable or rejected a write
│   └── Backpressure         the sink is holding back (carries retry_after)
├── ProcessError             a child process failed to start or stop
└── Stopping                 the process is stopping: work not yet sent to a provider is left for a replay

Foreign errors become ours in one place per foreign system (a door), with `raise ... from exc`:

    Kafka: aiokafka's KafkaError, OSError     -> BrokerError      modelyard/core/kafka.py  kafka_errors()
    model providers: the openai / anthropic   -> ProviderError,   workers/pools/backends/provider_errors.py
      SDKs' APIError; the lean vLLM client's     RateLimited        sdk_errors(), provider_error(); the
      HTTP status (its transport errors are                         retry decisions and the one Retry-After
      read in workers/pools/backends/vllm_http.py)                  parser are there too
    ClickHouse: clickhouse-connect, chdb      -> StorageError     workers/sink/clickhouse.py  ClickHouseStore

No other module catches those systems' exception types: tests/unit/test_doors.py fails when one does. (Wire input
is no foreign system: schemas/decoding.py turns a pydantic verdict into a value that names the field.)
"""

from __future__ import annotations


class ModelyardError(Exception):
    """Root of every error modelyard raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint or self.hint

    def one_line(self) -> str:
        return f"{self}. Fix: {self.hint}" if self.hint else str(self)


class ConfigError(ModelyardError):
    hint = "check MODELYARD_* environment variables and the YAML file named by MODELYARD_CONFIG"


class InvalidInput(ModelyardError):
    def __init__(self, message: str, *, field: str | None = None, reason: str = "validation") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class BrokerError(ModelyardError):
    hint = "start Kafka with `modelyard broker start` or set MODELYARD_KAFKA__BOOTSTRAP_SERVERS"


class ProviderError(ModelyardError):
    def __init__(self, message: str, *, provider: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable


class RateLimited(ProviderError):
    def __init__(self, message: str, *, provider: str, retry_after: float | None) -> None:
        super().__init__(message, provider=provider, retryable=True)
        self.retry_after = retry_after


class StorageError(ModelyardError):
    hint = "check MODELYARD_CLICKHOUSE__DSN; a chdb:// path may be held by another process"


class Backpressure(StorageError):
    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProcessError(ModelyardError):
    hint = "see the process log under .modelyard/logs/"


class Stopping(ModelyardError):
    """Raised instead of waiting (e.g. out a rate-limit pause) once the process is stopping. Nothing was
    sent for the job, so nothing is produced for it: its offset stays uncommitted and it replays."""
