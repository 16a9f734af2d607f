"""What a passing `python -m devtools.demo` prints: every step of the play and of the cleanup
as an `[ ok ]` line, no failure, and its closing line. Shared by the tests that run the demo
(tests/integration/test_launcher.py on the local cluster, tests/compose/ in the stack), so
that a step that stops being played, or fails, or is not implemented, fails them."""

from __future__ import annotations

import re

# (text of the step's title, how many `[ ok ]` lines carry it)
STEPS: tuple[tuple[str, int], ...] = (
    ("(1 GiB)", 1),  # CreateVolume pvc-<uid> (1 GiB)
    ("ControllerPublishVolume to node", 1),
    ("NodeStageVolume (FUSE mount at globalmount)", 1),
    ("NodePublishVolume into pod-a", 1),
    ("NodePublishVolume into pod-b", 1),
    ("pod-a writes greeting.txt", 1),
    ("pod-b reads greeting.txt", 1),
    ("ControllerExpandVolume to 2 GiB", 1),
    ("ControllerGetVolume (size as Heketi records it)", 1),
    ("NodeGetVolumeStats in pod-a", 1),
    ("statfs() in pod-a", 1),
    ("CreateSnapshot snapshot-", 1),
    ("pod-a overwrites the file after the snapshot", 1),
    ("from the snapshot", 1),  # CreateVolume pvc-<uid> from the snapshot
    ("ControllerPublishVolume (restored volume)", 1),
    ("NodeStageVolume (restored volume)", 1),
    ("NodePublishVolume into pod-c", 1),
    ("pod-c reads greeting.txt (restored volume)", 1),
    # the cleanup
    ("NodeUnpublishVolume from pod-c", 1),
    ("NodeUnstageVolume (restored volume)", 1),
    ("ControllerUnpublishVolume (restored volume)", 1),
    ("DeleteSnapshot snapshot-", 1),
    ("NodeUnpublishVolume from pod-b", 1),
    ("NodeUnpublishVolume from pod-a", 1),
    ("NodeUnstageVolume", 2),
    ("ControllerUnpublishVolume", 2),
    ("DeleteVolume pvc-", 2),
)
BAD = ("[FAIL]", "[skip]", "UNIMPLEMENTED", "DEMO FAILED", "LEFT BEHIND", "left behind:")
DONE = "Demo finished: exit 0."


BRICKS_STEP = "(where the bricks are)"
BRICK_ROW = re.compile(r"^\s+brick (\d+) on server (\S+): /\S+$")


def pool_problems(text: str) -> list[str]:
    """Why `text` does not show a replica 3 volume whose three bricks are on three servers."""
    problems = []
    ok = [line for line in text.splitlines()
          if line.startswith("[ ok ]") and BRICKS_STEP in line]
    if len(ok) != 1 or not ok[0].endswith("Replicate, replica 3: 3 bricks on 3 servers"):
        problems.append(f"no [ ok ] line {BRICKS_STEP!r} ending 'Replicate, replica 3: 3 "
                        f"bricks on 3 servers': {ok}")
    rows = [m for m in map(BRICK_ROW.match, text.splitlines()) if m]
    if [int(m.group(1)) for m in rows] != [1, 2, 3] or len({m.group(2) for m in rows}) != 3:
        problems.append(f"not three brick rows on three servers: {[m.group(0) for m in rows]}")
    return problems


def demo_problems(text: str, pool: bool = True) -> list[str]:
    """Why `text` is not the output of a demo that played every step (empty when it is);
    with `pool` (the local cluster's default storage) also the bricks on three servers."""
    problems = [f"the output says {bad!r}" for bad in BAD if bad in text]
    if pool:
        problems += pool_problems(text)
    ok = [line for line in text.splitlines() if line.startswith("[ ok ]")]
    for needle, count in STEPS:
        seen = sum(1 for line in ok if needle in line)
        if seen != count:
            problems.append(f"{seen} [ ok ] line(s) with {needle!r}, expected {count}")
    if DONE not in text:
        problems.append(f"no {DONE!r} line")
    return problems
