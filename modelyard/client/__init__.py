"""The producer SDK: how an upstream Python service hands work to modelyard and gets the answers back.

    from modelyard.client import Client, KafkaSettings, work_item

    with Client(KafkaSettings(bootstrap_servers="127.0.0.1:9092"), tenant_keys={"acme": key}) as client:
        item = work_item("ticket-42", "acme", "I was charged twice", labels=["billing", "bug"])
        delivery = client.submit(item)                  # acknowledged by Kafka: topic, partition, offset
        outcome = client.wait([item.job_id], timeout=60)[item.job_id]
        print(outcome.output if outcome.status == "ok" else outcome.error)   # ok, error or rejected

* `work_item(...)` builds a `schemas.WorkItem`, validated here with the same model the router uses; a bad
  field raises `InvalidInput` naming it, before anything is sent.
* `submit` / `submit_many` sign each job with its tenant's key when one is given (the
  `modelyard-signature` header the router checks), produce in batches (acks=all, idempotent) keyed by
  job_id, keep at most `max_in_flight` records unacknowledged (backpressure: the caller waits) and report
  every delivery (`Delivery`, `SubmitReport`; nothing is dropped silently).
* `results(job_ids)` streams each job's final `Result` as it lands on the results topic (or a `Rejected`
  when the router dead-lettered it); `wait(job_ids, timeout)` collects them.

`AsyncClient` is the asyncio flavour with the same methods (awaitables, an async iterator); `Client` runs
one in a background thread for synchronous code. Both speak plain Kafka: another language can do the same
with any Kafka client (see `schemas/json/` for the JSON Schema and a kcat example).
"""

from modelyard.client.items import encode, work_item
from modelyard.client.outcomes import Delivery, Rejected, SubmitReport
from modelyard.client.producer import AsyncClient
from modelyard.client.sync import Client
from modelyard.core._exceptions import BrokerError, InvalidInput, ModelyardError
from modelyard.core.settings import KafkaSettings
from schemas import Result, WorkItem

__all__ = [
    "AsyncClient",
    "BrokerError",
    "Client",
    "Delivery",
    "InvalidInput",
    "KafkaSettings",
    "ModelyardError",
    "Rejected",
    "Result",
    "SubmitReport",
    "WorkItem",
    "encode",
    "work_item",
]
