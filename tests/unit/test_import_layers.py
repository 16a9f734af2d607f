"""Imports run one way: services/common below the three services, those below migrate and
the command line, and nothing in services/ imports devtools or tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# package -> the packages of ours it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "services.common": set(),
    "services.controller": {"services.common"},
    "services.node": {"services.common"},
    "services.registrar": {"services.common"},
    "services.migrate": {"services.common", "services.controller"},
    "services.cli": {"services.common", "services.controller", "services.node",
                     "services.registrar", "services.migrate"},
}
OURS = ("services", "devtools", "tests", "bench", "tools")


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" else parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from services import cli` names a module too
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if node.module in ("services",)}
    return {m for m in found if m.split(".")[0] in OURS}


def _own_package(path: Path) -> str:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return _package(module)


def test_every_import_in_services_follows_the_layers() -> None:
    wrong = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        if "proto" in path.relative_to(ROOT).parts:
            continue  # generated code
        own = _own_package(path)
        if own == "services.__init__":
            continue
        allowed = ALLOWED.get(own)
        assert allowed is not None, f"{path}: a package this test does not know: {own}"
        for module in _imports(path):
            target = _package(module)
            if target in (own, "services"):
                continue
            if target not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_the_layer_check_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from services.migrate.journal import STATE\nimport devtools.host\n")
    assert _imports(bad) == {"services.migrate.journal", "devtools.host"}
    assert _package("services.migrate.journal") == "services.migrate"
