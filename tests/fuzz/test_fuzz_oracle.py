"""The fuzz suite's oracle catches what it is meant to catch (a silent oracle proves nothing)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from services.node import mountinfo
from tests.fuzz import oracle
from tests.fuzz.oracle import Observer, Outcome, marker_variants
from tests.fuzz.values import RELATIVE_ROOTS, World
from tests.support.host import require_host

MARKER = "FZSECRET0123456789ab"
OK = Outcome("OK", "", 0.01)


def _world(base: Path) -> World:
    (base / "kubelet" / "pods").mkdir(parents=True)
    (base / "outside" / "planted").mkdir(parents=True)
    (base / "logs").mkdir()
    return World(kubelet_root=base / "kubelet", sandbox=base / "outside", node_id="n",
                 sim_url="http://127.0.0.1:1", honeypot_url="http://127.0.0.1:2",
                 marker=MARKER, hostname="h")


def _kinds(found: list[tuple[str, str]]) -> list[str]:
    return [kind for kind, _ in found]


def test_the_marker_is_found_inside_base64_at_any_alignment() -> None:
    variants = marker_variants(MARKER)
    for prefix in ("", "a", "ab", "abc"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(f"{prefix}user:{MARKER}@host".encode()).decode()
            assert any(v in text for v in variants), (prefix, text)
    assert not any(v in base64.b64encode(b"user:other@host").decode() for v in variants)


def test_codes_durations_crashes_and_the_honeypot(tmp_path: Path) -> None:
    observer = Observer(_world(tmp_path), tmp_path, [tmp_path / "logs"])
    assert observer.after(OK, 0, []) == []
    assert _kinds(observer.after(Outcome("INTERNAL", "boom", 0.1), 0, [])) == ["INTERNAL"]
    assert _kinds(observer.after(Outcome("UNKNOWN", "boom", 0.1), 0, [])) == ["UNKNOWN"]
    assert _kinds(observer.after(Outcome("NOT_FOUND", "", 5.2), 0, [])) == ["slow"]
    assert _kinds(observer.after(Outcome("TRANSPORT", "reset", 0.1), 0, [])) == ["transport"]
    assert _kinds(observer.after(OK, 0, ["node"])) == ["crash"]
    assert _kinds(observer.after(OK, 1, [])) == ["unconfigured-url-contacted"]
    assert observer.after(OK, 1, []) == []


def test_the_marker_in_answers_and_logs(tmp_path: Path) -> None:
    observer = Observer(_world(tmp_path), tmp_path, [tmp_path / "logs"])
    leak = Outcome("PERMISSION_DENIED", f"bad user {MARKER}", 0.1)
    assert _kinds(observer.after(leak, 0, [])) == ["secret-in-answer"]
    encoded = base64.urlsafe_b64encode(f"http://a:{MARKER}@h".encode()).decode()
    assert _kinds(observer.after(Outcome("OK", "", 0.1, f"volume_id: 'hv1:@{encoded}:x'"),
                                 0, [])) == ["secret-in-answer"]
    log = tmp_path / "logs" / "controller.log"
    log.write_text("request secrets={'key': '***'}\n")
    assert observer.after(OK, 0, []) == []
    with log.open("a") as f:
        f.write(f"debug request parameters={{'restuserkey': '{MARKER}'}}\n")
    assert _kinds(observer.after(OK, 0, [])) == ["secret-in-log"]
    assert observer.after(OK, 0, []) == []  # each line once
    assert _kinds(observer.metrics("node", f'x{{label="{MARKER}"}} 1\nok 1')) == \
        ["secret-in-metrics"]


def test_files_appearing_or_vanishing_outside_the_kubelet_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base"
    world = _world(base)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    observer = Observer(world, base, [base / "logs"])
    (world.kubelet_root / "pods" / "new").mkdir()
    (base / "logs" / "node.log").write_text("fine\n")
    assert observer.after(OK, 0, []) == []
    (world.sandbox / "planted" / "mount").mkdir()
    assert _kinds(observer.after(OK, 0, [])) == ["created-outside-root"]
    (world.sandbox / "planted" / "mount").rmdir()
    assert _kinds(observer.after(OK, 0, [])) == ["removed-outside-root"]
    (base / "stray").write_text("")
    assert _kinds(observer.after(OK, 0, [])) == ["created-outside-root"]
    (cwd / RELATIVE_ROOTS[0] / "x").mkdir(parents=True)
    assert _kinds(observer.after(OK, 0, [])) == ["created-outside-root"]
    assert not (cwd / RELATIVE_ROOTS[0]).exists()  # cleaned up


def test_mounts_outside_the_kubelet_root(tmp_path: Path) -> None:
    require_host("bind mounts need root", root=True)
    world = _world(tmp_path)
    source = tmp_path / "source"
    source.mkdir()
    inside = world.kubelet_root / "pods" / "bind"
    inside.mkdir()
    observer = Observer(world, tmp_path, [tmp_path / "logs"])
    mounted = []
    try:
        for target in (inside, world.sandbox / "planted"):
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            mounted.append(target)
        found = observer.after(OK, 0, [])
        assert _kinds(found) == ["mount-outside-root"], found
        assert found[0][1].endswith(f"mounted at {world.sandbox / 'planted'}")
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False)


def test_only_this_sessions_volumes_count_as_its_mounts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another test run on the machine mounting its own fuzz volume somewhere is not a mount
    the driver under test made; the session's own volume mounted outside the root is."""
    world = _world(tmp_path)
    world.mountable.append({"volume": "fuzzfix_ours_0", "hosts": "h"})
    table: list[mountinfo.Mount] = []
    monkeypatch.setattr(oracle.mountinfo, "read", lambda: list(table))
    observer = Observer(world, tmp_path, [tmp_path / "logs"])

    def gluster(mount_id: int, source: str, point: str) -> mountinfo.Mount:
        return mountinfo.Mount(mount_id, 1, 0, 50, "/", point, ("rw",), "fuse.glusterfs",
                               source, ("rw",))

    table.append(gluster(10, "h:fuzzfix_theirs_0", "/tmp/hcsi-other/kubelet/pods/p/mount"))
    table.append(gluster(11, "h:fuzzfix_theirs_0", "/run/heketi-csi/scratch/other/ro-x"))
    assert observer.after(OK, 0, []) == []
    table.append(gluster(12, "h:fuzzfix_ours_0", "/run/heketi-csi/scratch/ours/ro-y"))
    table.append(gluster(13, "h:fuzzfix_ours_0", f"{world.kubelet_root}/pods/p/mount"))
    found = observer.after(OK, 0, [])
    assert _kinds(found) == ["mount-outside-root"], found
    assert found[0][1].endswith("mounted at /run/heketi-csi/scratch/ours/ro-y")
