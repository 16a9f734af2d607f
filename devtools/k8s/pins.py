"""One place for the sidecar versions: devtools/k8s/versions.env.

The harness builds and runs the sidecars of the versions in versions.env. The other places
that name a version carry it on a line marked ``# versions.env <VARIABLE>``:
k8s/base/kustomization.yaml (its ``images:`` tags) and the chart's values.yaml (the default
tags). This rewrites the marked values from versions.env, or with ``--check`` lists the ones
that disagree (exit 1). tests/unit/test_versions.py runs the check.

    python -m devtools.k8s.pins          # write   (make versions)
    python -m devtools.k8s.pins --check  # verify
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from devtools.k8s.config import read_versions_file

REPO = Path(__file__).resolve().parents[2]
CONSUMERS = (REPO / "k8s/base/kustomization.yaml", REPO / "charts/heketi-csi/values.yaml")
# `<key>: <value>  # versions.env <VARIABLE>`, the key possibly after a list dash.
MARKED = re.compile(
    r"^(?P<head>\s*(?:-\s+)?[\w.-]+:\s*)(?P<value>[^\s#]+)(?P<gap>\s+)"
    r"# versions\.env (?P<var>[A-Z][A-Z0-9_]*)\s*$"
)


@dataclass(frozen=True)
class Pin:
    path: Path
    line: int  # 1-based
    variable: str
    value: str


def pins(path: Path) -> list[Pin]:
    return [Pin(path, n, m["var"], m["value"])
            for n, text in enumerate(path.read_text().splitlines(), 1)
            if (m := MARKED.match(text))]


def synced(text: str, versions: dict[str, str]) -> str:
    """`text` with every marked value replaced by its variable's value."""
    def fix(line: str) -> str:
        m = MARKED.match(line)
        if m is None:
            return line
        if m["var"] not in versions:
            raise KeyError(f"versions.env has no {m['var']} (marked: {line.strip()})")
        return f"{m['head']}{versions[m['var']]}{m['gap']}# versions.env {m['var']}"
    return "".join(fix(line.rstrip("\n")) + ("\n" if line.endswith("\n") else "")
                   for line in text.splitlines(keepends=True))


def disagreements(paths: tuple[Path, ...] = CONSUMERS,
                  versions: dict[str, str] | None = None) -> list[str]:
    v = versions if versions is not None else read_versions_file()
    return [f"{p.path.relative_to(REPO) if p.path.is_relative_to(REPO) else p.path}:{p.line}: "
            f"{p.value}, versions.env {p.variable}={v.get(p.variable, '<missing>')}"
            for path in paths for p in pins(path) if v.get(p.variable) != p.value]


def write(paths: tuple[Path, ...] = CONSUMERS,
          versions: dict[str, str] | None = None) -> list[Path]:
    v = versions if versions is not None else read_versions_file()
    changed = []
    for path in paths:
        old = path.read_text()
        new = synced(old, v)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report disagreements")
    args = parser.parse_args(argv)
    if args.check:
        bad = disagreements()
        for line in bad:
            print(line)
        return 1 if bad else 0
    for path in write():
        print(f"updated {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
