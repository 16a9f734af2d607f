"""No test skips because the machine lacks something CI has: it fails and says what is missing.

Every skip in the test code is listed here with the reason it is a real "not applicable" case;
a new one fails this test until it is either made a failure (tests/support/host.py) or listed
with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support import host

REPO = Path(__file__).resolve().parents[2]
SKIP = re.compile(r"pytest\.skip\(|skipif\(|importorskip\(|mark\.skip\b|unittest\.skip")

# (file, text on the skipping line) -> why skipping there is right.
ALLOWED = {
    ("devtools/heketi_sim/testing.py", "needs the Heketi simulator"):
        "a fault-injection test cannot inject faults into a real Heketi "
        "(HEKETI_TEST_URL set): not applicable there",
    ("devtools/heketi_sim/testing.py", "is not set for the real Heketi"):
        "the non-admin user tests against a real Heketi need its user key, which only the "
        "person pointing the suite at that Heketi can give",
    ("devtools/heketi_sim/testing.py", "simulator only: {why}"):
        "a test that needs fault injection, clones or the simulator's bookkeeping, on the real "
        "Heketi half of a test run on both backends: not applicable there (its reason names "
        "which)",
    ("devtools/heketi_sim/testing.py", "simulator only: {', '.join(unknown)}"):
        "a simulator setting the real Heketi has no equivalent of: not applicable there",
    ("tests/support/heketi_backends.py", "simulator only: {why}"):
        "the controller tests' real-Heketi half, for what only the simulator can do",
    ("tests/e2e/test_migrate.py", "writes the in-tree data"):
        "a cluster that is not ours (kind) has no gluster mount on this host",
    ("tests/e2e/test_install_paths.py", "needs the local cluster"):
        "swapping the driver's install is only done on the local cluster, never on someone "
        "else's",
}


def _skips() -> list[tuple[str, int, str]]:
    found = []
    for top in ("tests", "devtools", "bench"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            rel = path.relative_to(REPO).as_posix()
            lines = path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, 1):
                if SKIP.search(line):
                    # the reason may be on the next line of the call
                    found.append((rel, number, line + " " + " ".join(lines[number:number + 2])))
    return found


def test_every_skip_is_a_listed_not_applicable_case() -> None:
    unlisted = [f"{rel}:{number}: {text.strip()[:120]}" for rel, number, text in _skips()
                if not any(rel == file and needle in text for file, needle in ALLOWED)]
    assert not unlisted, ("skips that are not listed as 'not applicable' (make them fail with "
                          "tests/support/host.py, or list them with a reason):\n"
                          + "\n".join(unlisted))


def test_a_missing_requirement_fails_the_test_and_says_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which",
                        lambda name: None if name == "mount.glusterfs" else f"/bin/{name}")
    with pytest.raises(pytest.fail.Exception) as failed:
        host.require_gluster_root("FUSE mounts")
    text = str(failed.value)
    assert text.startswith("FUSE mounts: it must run as root (uid is 1000)"), text
    assert "not on PATH: mount.glusterfs" in text and "tools/setup.sh" in text
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: f"/bin/{name}")
    host.require_gluster_root("FUSE mounts")  # nothing missing: no failure
