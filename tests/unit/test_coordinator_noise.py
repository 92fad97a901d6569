"""A process starting against a fresh broker logs no ERROR while the group coordinator is still loading."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

from modelyard.app import configure_logging  # settings -> the core logging setup, as every process does
from modelyard.core.logs import COORDINATOR_LOGGER
from modelyard.core.settings import load_settings

coordinator = logging.getLogger(COORDINATOR_LOGGER)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    coordinator.setLevel(logging.NOTSET)


def test_coordinator_not_available_is_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(), "router")  # here: its handler writes to this test's captured stderr
    coordinator.error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )  # as aiokafka
    assert capsys.readouterr().err == ""
    coordinator.setLevel(logging.INFO)
    coordinator.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and " INFO router " in lines[0], lines


def test_other_coordinator_errors_stay_errors(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(), "router")
    coordinator.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and " ERROR router " in lines[0], lines
