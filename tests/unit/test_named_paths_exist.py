"""Every repository path and `python -m` module the code names (docstrings, comments, messages)
exists: a renamed or deleted file makes this fail instead of leaving readers a dead pointer.

Paths are spelled from the repository root (`tests/...`, `devtools/...`, `README.md`); a path
split over two string literals (`"... tests/conformance/" "README.md ..."`) is joined first.
Placeholders (`<name>`, `*`, `{x}`) are not checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "devtools", "services", "tools", "bench")
SUFFIXES = {".py", ".md", ".sh", ".yml", ".yaml", ".toml", ".txt", ".cfg", ".ini", ".env"}
TOPS = ("tests", "devtools", "services", "docs", "k8s", "charts", "bench", "tools", "protos",
        ".ci")
ROOT_FILES = ("README.md", "Makefile", "Dockerfile", "pyproject.toml", "docker-compose.yml",
              "docker-compose.local.yml")
_TOP = "|".join(re.escape(t) for t in TOPS)
_ROOT = "|".join(re.escape(f) for f in ROOT_FILES)
PATH = re.compile(rf"(?<![\w./~$-])((?:{_TOP})/[\w./<>*{{}}-]*|(?:{_ROOT}))(?![\w-])")
MODULE = re.compile(r"-m ((?:devtools|services|tests|bench|tools)(?:\.\w+)*)")
# Adjacent string literals on two lines: `"... tests/conformance/"` then `"README.md ..."`.
CONTINUED = re.compile(r"""(["'])\s*\n\s*[rfbu]?(["'])""")
PLACEHOLDER = re.compile(r"[<>*{}]")
# Named on purpose although they are not files: (file, name) -> why.
NOT_FILES = {
    ("bench/__main__.py", "bench.bench_x"): "stands for any benchmark module",
    ("tests/unit/test_docs_refs.py", "docs/recovery.md"):
        "the name a doc is renamed to in that test's negative case",
}


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def _exists(ref: str) -> bool:
    path = REPO / ref.rstrip("/")
    return path.exists() or path.with_suffix(".py").exists() or \
        (REPO / (ref.rstrip("/") + ".py")).exists()


def _module_exists(name: str) -> bool:
    base = REPO / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def dead_references() -> list[str]:
    dead = []
    for rel in _tracked():
        if not rel.startswith(tuple(f"{top}/" for top in SCANNED)) or \
                REPO / rel == Path(__file__).resolve():  # its own examples are dead on purpose
            continue
        path = REPO / rel
        if path.suffix not in SUFFIXES or "/proto/" in rel or not path.is_file():
            continue
        text = CONTINUED.sub("", path.read_text(encoding="utf-8", errors="replace"))
        for match in PATH.finditer(text):
            ref = match.group(1).rstrip(".,:;")
            if not PLACEHOLDER.search(ref) and not _exists(ref) and (rel, ref) not in NOT_FILES:
                dead.append(f"{rel}: {ref}")
        for match in MODULE.finditer(text):
            name = match.group(1).rstrip(".")
            if (rel, name) not in NOT_FILES and not _module_exists(name):
                dead.append(f"{rel}: python -m {name}")
    return sorted(set(dead))


def test_every_named_path_and_module_exists() -> None:
    dead = dead_references()
    assert not dead, "names of files or modules that do not exist:\n" + "\n".join(dead)


def test_the_check_finds_a_dead_path_split_over_two_literals() -> None:
    text = '("see tests/conformance/"\n     "README.md) for why")'
    joined = CONTINUED.sub("", text)
    refs = [m.group(1) for m in PATH.finditer(joined)]
    assert refs == ["tests/conformance/README.md"]
    assert not _exists(refs[0])
    assert _exists("tests/support/controller_harness") and _exists("devtools/k8s/gomod/")
    assert _module_exists("devtools.demo") and not _module_exists("devtools.nothing_here")
