"""The gluster clients' cgroups, on a directory tree shaped like /sys/fs/cgroup (the real
hierarchies are exercised by the e2e suite), and cgexec's join-then-exec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.node import cgexec
from services.node.clients import CgroupError, ClientCgroups


def mountinfo_of(root: Path, hierarchies: dict[str, str]) -> Path:
    lines = [f"{30 + i} 25 0:{40 + i} / {root}/{name} rw,relatime shared:{9 + i} - {fstype} "
             f"cgroup rw,{name}" for i, (name, fstype) in enumerate(hierarchies.items())]
    lines.append(f"99 25 0:99 / {root.parent}/elsewhere rw - cgroup cgroup rw,pids")
    path = root.parent / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def host(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "host-cgroup"
    for name in ("memory", "cpuset", "unified"):
        (root / name).mkdir(parents=True)
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    (root / "unified" / "cgroup.controllers").write_text("")
    return root, mountinfo_of(root, {"memory": "cgroup", "cpuset": "cgroup",
                                     "unified": "cgroup2"})


def test_hierarchies_are_the_cgroup_mounts_below_the_root(host):
    root, info = host
    cgroups = ClientCgroups.find(str(root), "drv", info)
    assert cgroups.hierarchies == (root / "cpuset", root / "memory", root / "unified")
    assert cgroups.parent == "heketi-csi/drv"
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        ClientCgroups.find(str(root / "memory" / "x"), "drv", info)


def test_a_group_exists_in_every_hierarchy_with_the_cpus_it_may_use(host):
    root, info = host
    cgroups = ClientCgroups.find(str(root), "drv", info)

    procs = cgroups.create("stage-1")

    assert procs == [str(h / "heketi-csi/drv/stage-1/cgroup.procs")
                     for h in cgroups.hierarchies]
    assert cgroups.groups() == ["stage-1"]
    cgroups.create("stage-1")  # idempotent
    for procs_file in procs:
        Path(procs_file).write_text("41\n42\n")
    assert cgroups.pids("stage-1") == [41, 42]
    assert cgroups.pids("stage-2") == []


def test_a_group_goes_only_when_it_is_empty(host):
    root, info = host
    cgroups = ClientCgroups.find(str(root), "drv", info)
    for procs in cgroups.create("stage-1"):
        Path(procs).write_text("41\n")
    with pytest.raises(CgroupError, match="cannot remove"):
        cgroups.remove("stage-1")  # a directory with files: as the kernel's EBUSY
    for hierarchy in cgroups.hierarchies:
        for child in (hierarchy / "heketi-csi/drv/stage-1").iterdir():
            child.unlink()
    cgroups.remove("stage-1")
    cgroups.remove("stage-1")  # idempotent
    assert cgroups.groups() == []


def test_cgexec_joins_every_group_then_runs_the_command_as_itself(tmp_path):
    procs = [tmp_path / "a.procs", tmp_path / "b.procs"]
    for path in procs:
        path.write_text("")
    done = subprocess.run(
        [sys.executable, "-I", "-S", cgexec.__file__, *map(str, procs), "--",
         "/bin/sh", "-c", "echo $$"],
        capture_output=True, text=True, timeout=30, check=True)
    pid = done.stdout.strip()
    assert [p.read_text() for p in procs] == [pid, pid]


def test_cgexec_runs_nothing_when_a_group_cannot_be_joined(tmp_path):
    marker = tmp_path / "ran"
    done = subprocess.run(
        [sys.executable, "-I", "-S", cgexec.__file__, str(tmp_path / "missing" / "procs"),
         "--", "/bin/touch", str(marker)],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == cgexec.CANNOT_JOIN
    assert "cannot join cgroup" in done.stderr
    assert not marker.exists()
