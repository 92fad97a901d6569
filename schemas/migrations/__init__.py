"""Ordered ClickHouse migrations: NNNN_name.sql, statements separated by ';' on their own line end."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations() -> list[Migration]:
    """Every bundled migration, in version order."""
    files = sorted(
        (f for f in resources.files(__package__).iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [_parse(f.name, f.read_text(encoding="utf-8")) for f in files]


def _parse(filename: str, text: str) -> Migration:
    version, _, rest = filename.partition("_")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    statements = tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())
    return Migration(version=int(version), name=rest.removesuffix(".sql"), statements=statements)
