import pytest

from modelyard.core._exceptions import BrokerError
from modelyard.core.settings import load_settings
from modelyard.local.broker import LocalKafkaBroker


def security(**kafka: object) -> tuple[str, str]:
    settings = load_settings(kafka=kafka)
    return LocalKafkaBroker(settings.local_broker, settings.kafka)._client_security()


def test_the_local_broker_mirrors_the_clients_security_settings() -> None:
    assert security() == ("PLAINTEXT", "")
    protocol, lines = security(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
    )
    assert protocol == "SASL_PLAINTEXT" and 'user_u="p"' in lines
    with pytest.raises(BrokerError, match="not SSL"):
        security(security_protocol="SSL")
    with pytest.raises(BrokerError, match="needs kafka.sasl_username"):
        security(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
