"""Process logging: plain text or one JSON object per line (`log_format: json`), with the job_id when one is
known, and every configured secret value masked before a line is written (whatever logged it)."""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel, SecretStr

# The job a task is working on: set where a job is picked up (per asyncio task), read by the JSON formatter.
current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("modelyard_job_id", default=None)
MASK = "***"
_QUIET_LOGGERS = ("aiokafka", "httpx", "httpx2")  # httpx2: the anthropic SDK logs every request at INFO
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "job_id",
}


def secret_values(settings: BaseModel) -> list[str]:
    """Every SecretStr value in a settings tree (provider keys, SASL and ClickHouse passwords)."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            if secret := value.get_secret_value():
                found.append(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(settings)
    return sorted(set(found), key=len, reverse=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, logger, message, job_id (when known), extras, exc."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": self.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        if job_id:
            entry["job_id"] = job_id
        entry.update(
            {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter and masks secret values in what it produced."""

    def __init__(self, inner: logging.Formatter, secrets: list[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class TransientCoordinatorErrors(logging.Filter):
    """aiokafka logs ERROR "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    while a broker is still loading its offsets topic (every start against a fresh broker), then retries on its
    own. Those records are downgraded to INFO (shown only where aiokafka logs at INFO); other errors stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "GroupCoordinatorNotAvailable" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"


def configure_logging(process: str, level: str, log_format: str, secrets: list[str]) -> None:
    """Root handler on stderr in `log_format` (text or json), masking `secrets`; replaces handlers a library
    installed before us."""
    if log_format == "json":
        inner: logging.Formatter = JsonFormatter(process)
    else:
        inner = logging.Formatter(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(inner, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    coordinator = logging.getLogger(COORDINATOR_LOGGER)
    if not any(isinstance(f, TransientCoordinatorErrors) for f in coordinator.filters):
        coordinator.addFilter(TransientCoordinatorErrors())
