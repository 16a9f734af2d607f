"""--log-format and --log-level: the formats the chart offers are the ones the CLI accepts, a
wrong one is refused while parsing (exit 2, naming the flag), and each format writes what it
says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.cli import build_parser
from services.common.logging import LOG_FORMATS

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`heketi-csi registrar` with a socket that never appears: it logs and exits 1."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *argv], capture_output=True, text=True,
        timeout=60, check=False, cwd=REPO, env={"PATH": "/usr/bin:/bin", **(env or {})})


def registrar(tmp_path: Path, *extra: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run("registrar", "--csi-address", str(tmp_path / "none.sock"),
               "--kubelet-registration-path", str(tmp_path / "none.sock"),
               "--plugin-registration-dir", str(tmp_path), "--wait-timeout", "0.1", *extra,
               env=env)


def test_the_charts_log_formats_are_accepted() -> None:
    """values.yaml offers `json or text`; both, and its default, are formats of the CLI."""
    text = (REPO / "charts/heketi-csi/values.yaml").read_text()
    assert "; json or text." in text
    assert {"json", "text", yaml.safe_load(text)["logFormat"]} <= set(LOG_FORMATS)


@pytest.mark.parametrize("fmt", ["text", "console"])
def test_text_writes_readable_lines(tmp_path: Path, fmt: str) -> None:
    done = registrar(tmp_path, f"--log-format={fmt}")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and lines, done.stderr
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    assert any("heketi-csi registrar: error:" in line for line in lines)


def test_json_writes_json_lines_and_the_environment_chooses_too(tmp_path: Path) -> None:
    done = registrar(tmp_path, env={"LOG_FORMAT": "json"})
    records = [json.loads(line) for line in done.stderr.splitlines()
               if line.startswith("{")]
    assert records and all(r["level"] for r in records), done.stderr


@pytest.mark.parametrize(("flag", "value"), [("--log-format", "fancy"),
                                             ("--log-format", "x" * 5000),
                                             ("--log-level", "loud")])
@pytest.mark.parametrize("command", ["controller", "node", "registrar", "migrate plan"])
def test_a_wrong_value_is_refused_while_parsing(capsys: pytest.CaptureFixture[str],
                                                command: str, flag: str, value: str) -> None:
    argv = command.split()
    with pytest.raises(SystemExit) as exit_:
        build_parser(argv[0]).parse_args([*argv, f"{flag}={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: unknown log" in err
    assert len(err) < 2000, "the value is echoed bounded"


def test_level_and_format_are_case_insensitive(tmp_path: Path) -> None:
    done = registrar(tmp_path, "--log-format=JSON", "--log-level=Warning")
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert records and {r["level"] for r in records} <= {"warning", "error"}
