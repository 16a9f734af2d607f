"""Sized bricks refuse clearly where they cannot work, and the opt-out says that it lies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools.heketi_sim import brick_fs
from devtools.heketi_sim.server import HeketiSimulator
from devtools.k8s.config import SIM_BRICK_ROOT

REPO = Path(__file__).resolve().parents[2]


def test_no_loop_control_is_a_clear_reason(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(brick_fs, "LOOP_CONTROL", tmp_path / "no-loop-control")
    reason = brick_fs.unsupported_reason()
    assert reason is not None
    assert "loop devices" in reason or "root" in reason


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which",
                        lambda tool: None if tool == "xfs_growfs" else "/bin/" + tool)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    reason = brick_fs.unsupported_reason()
    assert reason is not None and "xfs_growfs" in reason and "xfsprogs" in reason


async def test_simulator_does_not_start_without_sized_bricks(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(brick_fs, "unsupported_reason", lambda: "no loop devices here")
    sim = HeketiSimulator(glusterd=True, brick_root=tmp_path / "bricks")
    with pytest.raises(brick_fs.BrickFsError, match="no loop devices here"):
        await sim.start()
    await sim.close()
    assert not (tmp_path / "bricks" / ".images").exists()


def test_cli_offers_the_opt_out_and_says_it_lies() -> None:
    out = subprocess.run([sys.executable, "-m", "devtools.heketi_sim", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert "--unsized-bricks" in out and "LIES" in out


def test_opt_out_makes_no_file_systems(tmp_path: Path) -> None:
    sim = HeketiSimulator(glusterd=True, brick_root=tmp_path, sized_bricks=False)
    assert sim.gluster is not None and sim.gluster.sized is None


def test_e2e_simulator_pod_mounts_bricks_the_hosts_glusterd_sees() -> None:
    """Privileged (loop devices, mounts), its brick mounts propagate to the host, at the
    path deploy makes a shared mount and down removes."""
    docs = yaml.safe_load_all((REPO / "k8s" / "e2e" / "heketi-sim.yaml").read_text())
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["securityContext"]["privileged"] is True
    assert f"--brick-root={SIM_BRICK_ROOT}" in container["args"]
    assert "--unsized-bricks" not in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(SIM_BRICK_ROOT))
    assert mount["mountPropagation"] == "Bidirectional"
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == str(SIM_BRICK_ROOT)
