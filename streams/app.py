"""The Faust application of the router process, built from settings."""

from __future__ import annotations

from pathlib import Path

import faust

from modelyard.core.settings import KafkaSettings


def create_app(group_id: str, kafka: KafkaSettings, state_dir: Path) -> faust.App:
    """The app's id is the router's consumer group id."""
    brokers = ";".join(f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(","))
    session_s = kafka.session_timeout_ms / 1000
    state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its datadir inside, without parents
    return faust.App(
        group_id,
        broker=brokers,
        broker_credentials=_credentials(kafka),
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(state_dir / "faust"),  # Faust's own files stay in the state dir, not the cwd
        web_enabled=False,
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 5),
        broker_commit_interval=0.5,
    )


def _credentials(kafka: KafkaSettings) -> faust.SASLCredentials | None:
    if not kafka.sasl_mechanism:
        return None
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return faust.SASLCredentials(
        username=kafka.sasl_username, password=password, mechanism=kafka.sasl_mechanism
    )
