"""What a test needs from the machine, checked so that its absence fails the test.

The suites run as root with GlusterFS installed (`tools/setup.sh` installs it and starts
glusterd; CI runs the same). A test that needs them fails with a message saying what is
missing and how to get it, instead of skipping: a skip would let a machine without them
report a green run that tested nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import pytest

GLUSTER_COMMANDS = ("gluster", "mount.glusterfs")
HOW = ("run the tests as root after `bash tools/setup.sh` (it installs GlusterFS and starts "
       "glusterd)")


def host_problems(root: bool = False, commands: Sequence[str] = ()) -> list[str]:
    """What is missing: root, or commands not on PATH."""
    problems = []
    if root and os.geteuid() != 0:
        problems.append(f"it must run as root (uid is {os.geteuid()})")
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        problems.append("not on PATH: " + ", ".join(missing))
    return problems


def require_host(why: str, root: bool = False, commands: Sequence[str] = ()) -> None:
    """Fail the calling test, naming `why` it needs them, when root or a command is missing."""
    problems = host_problems(root, commands)
    if problems:
        pytest.fail(f"{why}: {'; '.join(problems)}; {HOW}", pytrace=False)


def require_gluster_root(why: str) -> None:
    """Root, the gluster CLI and the FUSE client: what every real-GlusterFS test needs."""
    require_host(why, root=True, commands=GLUSTER_COMMANDS)
