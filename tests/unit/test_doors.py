"""One door per foreign system: Kafka's, the model providers' and ClickHouse's exceptions are caught (and turned
into modelyard's, see modelyard/core/_exceptions.py) in one module each, and nowhere else. Plus what each door
does with what it catches."""

from __future__ import annotations

import ast
import email.utils
from pathlib import Path

import anthropic
import httpx2 as httpx  # the HTTP client both SDKs are built on (their exceptions carry its responses)
import openai
import pytest
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from modelyard.core._exceptions import BrokerError, ProviderError, RateLimited
from modelyard.core.kafka import kafka_errors
from workers.pools.backends.provider_errors import (
    backoff_s,
    parse_retry_after,
    provider_error,
    retry_after_s,
    sdk_errors,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "modelyard", "streams", "workers")
DOORS = {
    "aiokafka": "modelyard/core/kafka.py",
    "openai": "workers/pools/backends/provider_errors.py",
    "anthropic": "workers/pools/backends/provider_errors.py",
    "clickhouse_connect": "workers/sink/clickhouse.py",
    "chdb": "workers/sink/clickhouse.py",
}


def _foreign_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the foreign package it comes from (`import openai`, `from aiokafka.errors import X`)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module.split(".")[0]
    return {local: package for local, package in names.items() if package in DOORS}


def _caught(tree: ast.Module) -> list[ast.expr]:
    """Every exception type expression: `except X`, `contextlib.suppress(X)`."""
    caught: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            caught.append(node.type)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "suppress"
        ):
            caught += node.args
    return caught


def catches_outside_their_door() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), relative)
            foreign = _foreign_names(tree)
            for expression in _caught(tree):
                packages = {
                    foreign[n.id] for n in ast.walk(expression) if isinstance(n, ast.Name) and n.id in foreign
                }
                if any(DOORS[package] != relative for package in packages):
                    found.append(f"{relative}:{expression.lineno} catches {ast.unparse(expression)}")
    return found


def test_foreign_exceptions_are_caught_only_at_their_door() -> None:
    assert catches_outside_their_door() == []


KAFKA_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}


def test_kafka_clients_are_built_only_at_the_kafka_door() -> None:
    """One client factory (modelyard/core/kafka.py): the router's own consumer and producer factory is gone."""
    built = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), relative)):
                name = getattr(node, "func", None)
                name = getattr(name, "id", getattr(name, "attr", None))
                if isinstance(node, ast.Call) and name in KAFKA_CLIENTS and relative != DOORS["aiokafka"]:
                    built.append(f"{relative}:{node.lineno} builds {name}")
    assert built == []


def test_the_door_check_sees_a_catch_outside_the_door(tmp_path: Path) -> None:
    tree = ast.parse(
        "from aiokafka.errors import KafkaError\ntry:\n    pass\nexcept (KafkaError, OSError):\n    pass\n"
    )
    assert _foreign_names(tree) == {"KafkaError": "aiokafka"}
    assert [ast.unparse(e) for e in _caught(tree)] == ["(KafkaError, OSError)"]


@pytest.mark.parametrize(
    "error",
    [KafkaConnectionError("unable to bootstrap"), CommitFailedError("rebalanced"), ConnectionRefusedError()],
)
def test_kafka_errors_become_broker_errors_with_their_cause(error: Exception) -> None:
    with (
        pytest.raises(BrokerError, match="Kafka: cannot commit offsets") as caught,
        kafka_errors("commit offsets"),
    ):
        raise error
    assert caught.value.__cause__ is error


def test_kafka_errors_lets_our_own_errors_through() -> None:
    with pytest.raises(ValueError), kafka_errors("fetch records"):
        raise ValueError("not Kafka's")


def _status_error(sdk, status: int, headers: dict[str, str], body: object = None) -> Exception:  # type: ignore[no-untyped-def]
    response = httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://provider/v1"))
    kind = {429: sdk.RateLimitError, 400: sdk.BadRequestError, 503: sdk.InternalServerError}[status]
    return kind("refused", response=response, body=body)


@pytest.mark.parametrize("sdk", [openai, anthropic])
def test_both_sdks_translate_the_same_way(sdk) -> None:  # type: ignore[no-untyped-def]
    def raised(error: Exception) -> ProviderError:
        with pytest.raises(ProviderError) as caught, sdk_errors(sdk, "p"):
            raise error
        assert caught.value.__cause__ is error
        return caught.value

    limited = raised(_status_error(sdk, 429, {"retry-after-ms": "1500", "retry-after": "2"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 1.5 and limited.retryable
    assert raised(_status_error(sdk, 429, {"retry-after": "120"})).retry_after == 120  # type: ignore[attr-defined]
    refused = raised(_status_error(sdk, 400, {}, {"error": {"message": "max_tokens too large"}}))
    assert (str(refused), refused.retryable) == ("p: HTTP 400: max_tokens too large", False)
    down = raised(_status_error(sdk, 503, {}))
    assert down.retryable and str(down).startswith("p: HTTP 503")
    timeout = raised(sdk.APITimeoutError(request=httpx.Request("POST", "http://provider/v1")))
    assert (str(timeout), timeout.retryable) == ("p: request timed out", True)
    dropped = raised(sdk.APIConnectionError(request=httpx.Request("POST", "http://provider/v1")))
    assert dropped.retryable and "APIConnectionError" in str(dropped)


def test_the_lean_client_and_the_sdks_give_the_same_errors() -> None:
    """The vLLM client builds its final error from (status, message, Retry-After) with the same function."""
    assert isinstance(provider_error("vllm", 429, "", 0.01), RateLimited)
    assert str(provider_error("vllm", 404, "no such model")) == "vllm: HTTP 404: no such model"
    assert not provider_error("vllm", 404, "x").retryable and provider_error("vllm", 409, "x").retryable
    assert provider_error("vllm", None, "request timed out or the connection dropped").retryable


def test_one_retry_after_parser() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) is None
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0  # header names in any case
    assert retry_after_s("61") is None and backoff_s(0, 61.0) < 1  # a client's own retry waits 60 s at most
