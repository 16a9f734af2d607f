"""The README's two commands, .ci/run and the set-up scripts they run stay what the README says.

- .ci/run is `apt-get update` plus the README's test command, word for word, and installs
  nothing itself (CI cannot hide a step a new user's machine would miss);
- tools/setup.sh, all that `make demo` needs, runs without any Go on PATH;
- tools/go.sh picks a Go at least as new as every go.mod of ours asks for: the one on PATH
  when it is new enough, else the toolchain it keeps in the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
GO_SH = ROOT / "tools" / "go.sh"


def readme_commands() -> list[str]:
    """The commands of the README's first code block (comments stripped)."""
    match = re.search(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "README.md has no ```sh block"
    return [line.split("#", 1)[0].strip() for line in match.group(1).splitlines() if line.strip()]


def script_lines(path: Path) -> list[str]:
    """The non-comment, non-blank lines of a shell script."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    commands = readme_commands()
    assert commands[:2] == ["bash tools/setup.sh && make demo", "bash tools/setup.sh && make test"]


def test_ci_run_is_apt_update_and_the_readme_test_command() -> None:
    lines = script_lines(CI_RUN)
    assert lines[-1] == readme_commands()[1], "the last line of .ci/run is the README's command"
    installs = [line for line in lines if re.search(r"apt-get\s+install|pip\s+install", line)]
    assert installs == [], f".ci/run installs by itself: {installs}"
    assert any(line == "apt-get update -qq" for line in lines)
    builds = [line for line in lines if "devtools" in line or "go " in line]
    assert builds == [], f".ci/run builds by itself: {builds}"


def go_free_path(tmp_path: Path) -> str:
    """PATH with every directory holding a `go` replaced: a machine without Go."""
    kept = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "go").exists()]
    return os.pathsep.join(kept)


def test_setup_needs_no_go(tmp_path: Path) -> None:
    """What `make demo` needs is set up on a machine without Go (setup is idempotent: here it
    only checks that everything is in place)."""
    env = {**os.environ, "PATH": go_free_path(tmp_path)}
    assert shutil.which("go", path=env["PATH"]) is None
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "setup.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "go" not in re.findall(r"\b(go)\b", proc.stdout + proc.stderr)


def script_value(path: Path, name: str) -> str:
    match = re.search(rf"^{name}=([0-9.]+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} sets no {name}"
    return match.group(1)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_go_min_covers_every_gomod_of_ours() -> None:
    go_min = version_tuple(script_value(GO_SH, "GO_MIN"))
    go_version = version_tuple(script_value(GO_SH, "GO_VERSION"))
    asked = {
        gomod.parent.name: version_tuple(m.group(1))
        for gomod in (ROOT / "devtools").rglob("go.mod")
        if (m := re.search(r"^go ([0-9.]+)$", gomod.read_text(), re.MULTILINE))
    }
    assert asked, "no go.mod under devtools/"
    newest = max(asked.values())
    assert go_min >= newest, f"GO_MIN {go_min} is older than a go.mod asks: {asked}"
    assert go_version >= go_min


def fake_go(directory: Path, version: str) -> Path:
    """A `go` that answers `go env GOVERSION` like Go <version> does."""
    directory.mkdir(parents=True)
    go = directory / "go"
    go.write_text(f'#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go{version}\n')
    go.chmod(0o755)
    return go


def run_go_sh(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "HEKETI_CSI_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        ["bash", str(GO_SH)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_go_sh_takes_a_new_enough_go_from_path(tmp_path: Path) -> None:
    go_min = script_value(GO_SH, "GO_MIN")
    go = fake_go(tmp_path / "new", go_min)
    proc = run_go_sh(tmp_path, f"{go.parent}{os.pathsep}{go_free_path(tmp_path)}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(go)
    assert f"using Go {go_min}" in proc.stderr


def test_go_sh_passes_over_an_old_go_for_the_cached_toolchain(tmp_path: Path) -> None:
    go_version = script_value(GO_SH, "GO_VERSION")
    old = fake_go(tmp_path / "old", "1.19.8")
    cached = fake_go(tmp_path / "cache" / f"go-{go_version}" / "bin", go_version)
    proc = run_go_sh(tmp_path, f"{old.parent}{os.pathsep}{go_free_path(tmp_path)}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cached)
    assert "1.19.8" in proc.stderr and "older than" in proc.stderr
