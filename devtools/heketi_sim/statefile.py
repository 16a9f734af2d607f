"""The simulator's state file (`--db PATH`): its topology, volumes, bricks and pending
operations as one JSON document, so that a simulator killed (even with SIGKILL) and started
again on the same file finds what a real Heketi finds in its BoltDB.

Every change an API client can see is written before it is answered (a create's placement and
its pending operation before the 202, as Heketi commits its Build step), to a temporary file
in the same directory that then replaces the old one: a kill mid-write leaves the previous
state. Reading refuses files over MAX_BYTES and documents of another version.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from devtools.heketi_sim.model import Brick, Cluster, Device, Node, Topology, Volume
from devtools.heketi_sim.pending import PendingOp

VERSION = 1
MAX_BYTES = 64 << 20


class StateFileError(RuntimeError):
    """The state file cannot be read (too large, not JSON, another version, bad fields)."""


def dumps(topo: Topology, ops: list[PendingOp]) -> str:
    return json.dumps({
        "version": VERSION,
        "clusters": [dataclasses.asdict(c) for c in topo.clusters.values()],
        "nodes": [dataclasses.asdict(n) for n in topo.nodes.values()],
        "devices": [dataclasses.asdict(d) for d in topo.devices.values()],
        "volumes": [dataclasses.asdict(v) for v in topo.volumes.values()],
        "bricks": [dataclasses.asdict(b) for b in topo.bricks.values()],
        "pending": [dataclasses.asdict(op) for op in ops],
    })


def write(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (blocking: run it off the event loop)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path) -> tuple[Topology, list[PendingOp]] | None:
    """The state in `path`, or None when there is no such file (blocking)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(raw) > MAX_BYTES:
        raise StateFileError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise StateFileError(f"{path}: not a version {VERSION} simulator state file")
        topo = Topology(
            clusters=_load(doc, "clusters", Cluster), nodes=_load(doc, "nodes", Node),
            devices=_load(doc, "devices", Device), volumes=_load(doc, "volumes", Volume),
            bricks=_load(doc, "bricks", Brick))
        ops = [PendingOp(**item) for item in doc.get("pending", [])]
    except (ValueError, TypeError, KeyError) as exc:
        raise StateFileError(f"{path}: unreadable state file: {exc}") from None
    return topo, ops


def _load(doc: dict[str, Any], key: str, cls: Any) -> dict[str, Any]:
    items = doc.get(key, [])
    if not isinstance(items, list):
        raise StateFileError(f"{key}: not a list")
    loaded = {}
    for item in items:
        if not isinstance(item, dict):
            raise StateFileError(f"{key}: an entry is not an object")
        obj = cls(**item)
        loaded[obj.id] = obj
    return loaded
