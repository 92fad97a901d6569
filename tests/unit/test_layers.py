"""The package layers, as ARCHITECTURE.md draws them: every import of ours points down, never up or sideways.

    schemas  <-  modelyard.core  <-  {streams, workers.pools, workers.sink}  <-  modelyard.ops  <-  modelyard.local
                                                                                  <-  modelyard.app / modelyard.cli
    schemas  <-  modelyard.core  <-  modelyard.client (the producer SDK)  <-  modelyard.ops and above

The router (streams), the pools and the sink never import each other; `workers` never imports Faust; no two
modules import each other. Imports inside functions count too (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("schemas", "modelyard", "streams", "workers")

# layer -> the layers it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "modelyard.core": {"schemas", "modelyard.core"},
    "streams": {"schemas", "modelyard.core", "streams"},
    "workers.pools": {"schemas", "modelyard.core", "workers.pools"},
    "workers.sink": {"schemas", "modelyard.core", "workers.sink"},
    "modelyard.client": {"schemas", "modelyard.core", "modelyard.client"},
    "modelyard.ops": {
        "schemas",
        "modelyard.core",
        "modelyard.client",
        "streams",
        "workers.pools",
        "workers.sink",
        "modelyard.ops",
    },
    "modelyard.local": {
        "schemas",
        "modelyard.core",
        "modelyard.client",
        "streams",
        "workers.pools",
        "workers.sink",
        "modelyard.ops",
        "modelyard.local",
    },
    "modelyard.top": {
        "schemas",
        "modelyard.core",
        "modelyard.client",
        "streams",
        "workers.pools",
        "workers.sink",
        "modelyard.ops",
        "modelyard.local",
        "modelyard.top",
    },
}
FORBIDDEN_FOREIGN = {
    "workers.pools": {"faust"},
    "workers.sink": {"faust"},
    "modelyard.core": {"faust"},
    "schemas": {"faust"},
    "modelyard.client": {"faust"},
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None for modules that are not ours."""
    for layer in ALLOWED:
        if layer != "modelyard.top" and (module == layer or module.startswith(layer + ".")):
            return layer
    if module == "modelyard" or module.startswith("modelyard."):
        return "modelyard.top"
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module the file imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def our_modules() -> dict[str, Path]:
    files = [p for top in OURS for p in (ROOT / top).rglob("*.py")]
    return {module_name(p): p for p in files}


MODULES = our_modules()


def violations() -> list[str]:
    out = []
    for name, path in sorted(MODULES.items()):
        layer = layer_of(name)
        for target in sorted(imports_of(path)):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer not in ALLOWED[layer]:
                out.append(f"{name} ({layer}) imports {target} ({target_layer})")
            if target.split(".")[0] in FORBIDDEN_FOREIGN.get(layer, set()):
                out.append(f"{name} ({layer}) imports {target}")
    return out


def test_every_import_points_down_the_layers() -> None:
    assert violations() == []


def test_no_two_modules_import_each_other() -> None:
    edges = {
        name: {t for t in imports_of(path) if t in MODULES and t != name} for name, path in MODULES.items()
    }
    cycles = sorted(
        f"{a} <-> {b}" for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, ())
    )
    assert cycles == []


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("streams.policy", "workers.pools.cascade", False),
        ("workers.sink.sink", "workers.pools.pool", False),
        ("workers.pools.pool", "streams.rules", False),
        ("schemas.result", "modelyard.core.settings", False),
        ("modelyard.core.settings", "modelyard.ops.submit", False),
        ("modelyard.ops.distill", "streams.rules", True),
        ("modelyard.local.demo", "modelyard.ops.submit", True),
        ("modelyard.cli", "modelyard.local.demo", True),
        ("modelyard.ops.submit", "modelyard.client.producer", True),
        ("modelyard.client.producer", "modelyard.ops.submit", False),
        ("modelyard.client.results", "streams.policy", False),
    ],
)
def test_the_rule_itself_tells_down_from_up(importer: str, imported: str, allowed: bool) -> None:
    assert (layer_of(imported) in ALLOWED[layer_of(importer)]) is allowed
