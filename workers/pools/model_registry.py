"""ModelRegistry: registered student models on disk, `<models_dir>/<task>/<version>/`, one current version a task.

A version directory holds the model files and `registration.json` (what it was trained on, its held-out
agreement, the target). `<task>/CURRENT` names the version pools serve; it is replaced atomically, so a pool
never reads a half-written registration. ClickHouse's `model_registry` table keeps the same facts for analysts.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import orjson

from workers.pools.encoder import DEFAULT_ENCODER_DIR
from workers.pools.student import StudentModel

VERSION = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Registration:
    task: str
    version: str
    trained_on: int
    heldout_examples: int
    heldout_agreement: float
    target: float
    registered_at: datetime
    path: str
    kind: str = "ngram"
    temperature: float = 1.0
    threshold: float | None = None  # the calibrated cascade threshold (None: the student answers everything)
    served_share: float = 1.0  # held-out share at or above the threshold
    served_agreement: float | None = None  # held-out agreement on that share


class ModelRegistry:
    def __init__(self, root: Path, encoder_dir: Path = DEFAULT_ENCODER_DIR) -> None:
        self.root = root
        self.encoder_dir = encoder_dir

    def register(
        self,
        model: StudentModel,
        task: str,
        trained_on: int,
        heldout_examples: int,
        heldout_agreement: float,
        target: float,
        at: datetime,
        serving: dict[str, float | None] | None = None,
    ) -> Registration:
        """Save the model as the task's next version and make it current."""
        version = f"v{self._last_version(task) + 1}"
        directory = self.root / task / version
        model.save(directory)
        registration = Registration(
            task,
            version,
            trained_on,
            heldout_examples,
            heldout_agreement,
            target,
            at,
            str(directory.resolve()),
            model.kind,
            model.temperature,
            **(serving or {}),  # type: ignore[arg-type]
        )
        (directory / "registration.json").write_bytes(
            orjson.dumps(asdict(registration), option=orjson.OPT_INDENT_2)
        )
        pointer = self.root / task / "CURRENT"
        temporary = pointer.with_suffix(".tmp")
        temporary.write_text(version + "\n")
        os.replace(temporary, pointer)
        return registration

    def current_version(self, task: str) -> str | None:
        try:
            return (self.root / task / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def pointer_mtime(self, task: str) -> float | None:
        try:
            return (self.root / task / "CURRENT").stat().st_mtime
        except FileNotFoundError:
            return None

    def load_current(self, task: str) -> tuple[str, StudentModel] | None:
        version = self.current_version(task)
        if version is None:
            return None
        return version, StudentModel.load(self.root / task / version, self.encoder_dir)

    def _last_version(self, task: str) -> int:
        folder = self.root / task
        numbers = (
            [int(m.group(1)) for p in folder.iterdir() if (m := VERSION.match(p.name))]
            if folder.is_dir()
            else []
        )
        return max(numbers, default=0)
