"""`modelyard dlq list|show|replay` against a real dead-letter topic (group-less reads, replay to the jobs topic)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import AIOKafkaProducer

from modelyard.cli import main
from modelyard.core.settings import Settings
from modelyard.core.topics import ensure_topics
from schemas import WorkItem
from schemas.decoding import decode
from schemas.rejection import Rejection
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

FIXED = b'{"job_id": "fixed-1", "tenant": "acme", "input": "charged twice", "params": {"labels": ["billing", "bug"]}}'
BROKEN = b'{"job_id": "broken-1", "tenant": "acme"}'


async def dead_letter(settings: Settings, letters: list[tuple[bytes, str, Rejection | None]]) -> None:
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        for raw, stage, rejection in letters:
            rejection = rejection or decode(WorkItem, raw)
            letter = rejection.dead_letter(
                raw, stage, source_topic=settings.kafka.jobs_topic, source_partition=0, source_offset=7
            )
            await producer.send_and_wait(settings.kafka.dead_letter_topic, letter.model_dump_json().encode())
        await producer.send_and_wait(settings.kafka.dead_letter_topic, b"written by someone else")
    finally:
        await producer.stop()


def test_list_show_and_replay(pipeline_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.kafka, settings.pools))
    asyncio.run(
        dead_letter(
            settings,
            [
                (b"not json", "submit", None),
                (FIXED, "router", Rejection("router_error", None, "RuntimeError: a defect, since fixed")),
                (BROKEN, "router", None),
            ],
        )
    )

    assert main(["dlq", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["offset"], r["stage"], r["reason"], r["field"]) for r in listed] == [
        (0, "submit", "invalid_json", None),
        (1, "router", "router_error", None),
        (2, "router", "validation", "input"),
        (3, None, "not_a_dead_letter", None),
    ]
    assert main(["dlq", "list", "--reason", "validation", "--since", "1h", "--format", "json"]) == 0
    assert [r["offset"] for r in json.loads(capsys.readouterr().out)] == [2]
    assert main(["dlq", "list", "--stage", "router"]) == 0
    table = capsys.readouterr().out
    assert "router_error" in table and "invalid_json" not in table

    assert main(["dlq", "show", "1"]) == 0
    shown = capsys.readouterr().out
    assert '"job_id": "fixed-1"' in shown and "RuntimeError" in shown

    assert main(["dlq", "replay"]) == 2  # no filter and no --all: refused
    assert main(["dlq", "replay", "--stage", "router", "--dry-run"]) == 1
    assert "would replay 1; still invalid 1" in capsys.readouterr().err
    assert main(["dlq", "replay", "--stage", "router"]) == 1
    err = capsys.readouterr().err
    assert "replayed 1; still invalid 1" in err and "still invalid 0:2: validation (input)" in err

    jobs = asyncio.run(read_topic(settings, settings.kafka.jobs_topic, 1, timeout=20))
    assert jobs == [FIXED]
    assert main(["dlq", "list", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4  # replay leaves the letters where they are
