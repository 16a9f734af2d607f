"""Where a pool keeps its files and what it records about itself.

`<root>/<pool>/` holds everything of a pool: `state.json` (pids, namespaces, loop devices:
written after every change, so a later `down` finds what a killed `up` made), the brick
images, each server's `/var/lib/glusterd` and logs, and the host's mount points. The root is
`$HCSI_GLUSTER_POOL_ROOT`, else /var/tmp/heketi-csi-gluster-pool (on disk, not in memory:
brick images are sparse but real).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PoolState | None:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PoolState:
        raw = dict(raw)
        members = {k: Server(**v) for k, v in raw.pop("members", {}).items()}
        return cls(**raw, members=members)

    def take(self, other: PoolState) -> None:
        """Become `other`, in place: a Server object a caller holds stays the one in
        `members` (its fields are updated), so a change made to it after this is kept."""
        for f in fields(self):
            if f.name != "members":
                setattr(self, f.name, getattr(other, f.name))
        for key in list(self.members):
            if key not in other.members:
                del self.members[key]
        for key, theirs in other.members.items():
            mine = self.members.setdefault(key, Server(theirs.index))
            for f in fields(Server):
                setattr(mine, f.name, getattr(theirs, f.name))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for the state file at `path` between processes (the pool's
    commands and the Heketi simulator in pool mode change one pool at once), held while
    the file is read, merged and written: milliseconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def merge(base: Any, mine: Any, theirs: Any) -> Any:
    """Three-way merge of JSON values: the changes this process made since it read `base`
    (`mine`) applied over what the file holds now (`theirs`, another process's changes
    included). A key or list item this process removed is removed; one it added or changed
    is its own; everything else is theirs."""
    if isinstance(base, dict) and isinstance(mine, dict) and isinstance(theirs, dict):
        out = {k: v for k, v in theirs.items() if not (k in base and k not in mine)}
        for key, value in mine.items():
            if key not in base:
                out[key] = value
            elif key in theirs:
                out[key] = merge(base[key], value, theirs[key])
            elif value != base[key]:
                out[key] = value
        return out
    if isinstance(base, list) and isinstance(mine, list) and isinstance(theirs, list):
        removed = [x for x in base if x not in mine]
        return [x for x in theirs if x not in removed] + \
            [x for x in mine if x not in base and x not in theirs]
    return theirs if mine == base else mine
