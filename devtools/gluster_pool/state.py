"""Where a pool keeps its files and what it records about itself.

`<root>/<pool>/` holds everything of a pool: `state.json` (pids, namespaces, loop devices:
written after every change, so a later `down` finds what a killed `up` made), the brick
images, each server's `/var/lib/glusterd` and logs, and the host's mount points. The root is
`$HCSI_GLUSTER_POOL_ROOT`, else /var/tmp/heketi-csi-gluster-pool (on disk, not in memory:
brick images are sparse but real).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/var/tmp/heketi-csi-gluster-pool")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
SUBNET_RE = re.compile(r"^10\.(\d{1,3})\.(\d{1,3})$")
MAX_SERVERS = 9


def root() -> Path:
    return Path(os.environ.get("HCSI_GLUSTER_POOL_ROOT") or DEFAULT_ROOT)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"pool name {name[:40]!r}: 1-10 lower-case letters and digits, "
                         "starting with a letter")
    return name


def check_subnet(prefix: str) -> str:
    """`10.A.B`, the first three octets of the pool's /24 (inside 10.0.0.0/8)."""
    match = SUBNET_RE.match(prefix)
    if not match or any(int(g) > 255 for g in match.groups()):
        raise ValueError(f"subnet {prefix[:40]!r}: give the first three octets of a /24 "
                         "in 10.0.0.0/8, e.g. 10.231.0")
    return prefix


@dataclass
class Server:
    index: int
    # "running", "partitioned", "stopped" (cleanly) or "off" (killed)
    status: str = "off"
    pid: int | None = None  # host pid of its reaper (PID 1 inside)
    pid_ns: str | None = None
    net_ns: str | None = None
    loop: str | None = None
    # extra brick file systems (name -> loop device), mounted at every start
    filesystems: dict[str, str] = field(default_factory=dict)


@dataclass
class PoolState:
    name: str
    subnet: str
    servers: int
    image_bytes: int
    switch_pid: int | None = None
    members: dict[str, Server] = field(default_factory=dict)
    # every PID namespace the pool ever had (a `down` checks none is left with a process)
    pid_namespaces: list[str] = field(default_factory=list)

    def server(self, index: int) -> Server:
        return self.members.setdefault(str(index), Server(index))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PoolState | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        members = {k: Server(**v) for k, v in raw.pop("members", {}).items()}
        return cls(**raw, members=members)
