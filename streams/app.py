"""The Faust application of the router process, built from settings."""

from __future__ import annotations

import faust

from modelyard.core.settings import Settings


def create_app(settings: Settings) -> faust.App:
    brokers = ";".join(f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(","))
    session_s = settings.kafka.session_timeout_ms / 1000
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its datadir inside, without parents
    return faust.App(
        f"{settings.app_id}.router",
        broker=brokers,
        broker_credentials=_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(settings.state_dir / "faust"),  # Faust's own files stay in the state dir, not the cwd
        web_enabled=False,
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 5),
        broker_commit_interval=0.5,
    )


def _credentials(settings: Settings) -> faust.SASLCredentials | None:
    kafka = settings.kafka
    if not kafka.sasl_mechanism:
        return None
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return faust.SASLCredentials(
        username=kafka.sasl_username, password=password, mechanism=kafka.sasl_mechanism
    )
