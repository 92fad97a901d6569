"""`modelyard route --explain` says plainly why an item was or was not scored for novelty."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.app import build_decider
from modelyard.core.settings import load_settings
from schemas import WorkItem
from streams.novelty import NoveltyDetector
from streams.novelty_explain import explain_novelty

TICKET = {
    "job_id": "x",
    "tenant": "acme",
    "input": "I was charged twice for my order",
    "params": {"labels": ["billing", "bug"]},
}


def explain(state_dir: Path, item: dict) -> str:
    env = {**os.environ, "MODELYARD_STATE_DIR": str(state_dir), "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "route", "--explain", "-"],
        input=json.dumps(item),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith("novelty:"))


@pytest.fixture
def learned(tmp_path: Path) -> Path:
    """A state dir whose saved centroids know billing tickets (as a router saves them)."""
    settings = load_settings(state_dir=tmp_path)
    detector = NoveltyDetector(settings.router.novelty_dims)
    texts = [f"I was charged twice for my order number {n}, please refund" for n in range(80)]
    detector.learn("classification", detector.vectors(texts))
    detector.save(settings.novelty_state_file)
    return tmp_path


def test_no_saved_centroids_says_where_they_would_be(tmp_path: Path) -> None:
    line = explain(tmp_path, TICKET)
    assert "not scored yet" in line and "0 of the 50" in line
    assert f"no centroids saved at {tmp_path}" in line and "when it stops" in line


def why(state_dir: Path, item: dict, **overrides: object) -> str:
    """The same sentence, in process (what the command prints after "novelty: ")."""
    settings = load_settings(state_dir=state_dir, **overrides)
    decider = build_decider(settings)  # what `modelyard route` asks
    loaded = decider.novelty.load(settings.novelty_state_file)
    decision = decider.decide(WorkItem.model_validate(item), learn=False)
    return explain_novelty(
        decision, decider.source.current().novelty, decider.novelty, settings.novelty_state_file, loaded
    )


def test_an_item_for_an_unguarded_pool_is_not_scored(learned: Path) -> None:
    line = why(learned, {"job_id": "x", "tenant": "acme", "input": "Write a poem about the sea"})
    assert line.startswith("not scored: pool frontier is not one the check guards")


def test_an_item_of_unknown_task_is_sent_on_unscored(learned: Path) -> None:
    item = {"job_id": "x", "tenant": "acme", "input": "hello", "task": "other"}
    line = why(learned, item, routes={"other": "slm"})  # a rule sends it towards the SLM
    assert "not scored: the task type is unknown" in line


def test_familiar_and_novel_items_say_their_score_and_where_they_go(learned: Path) -> None:
    familiar = explain(learned, TICKET)  # the command itself, once
    assert "< threshold 0.75: familiar classification work" in familiar and "stays on slm" in familiar
    line = why(learned, {**TICKET, "input": "lattice gauge theory spectra of quantum chromodynamics"})
    assert ">= threshold 0.75" in line and "goes to frontier instead" in line and "80 learned items" in line
