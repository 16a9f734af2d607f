"""Heketi's pending operations: what a volume operation holds while it runs, and what a crash
leaves behind.

Heketi v10 writes a pending operation entry into BoltDB in the same transaction that places
an operation's bricks (its Build step), before it answers 202, and removes it when the
operation ends. A Heketi killed in between keeps the entry: its next start marks every
pending entry `stale` (ServerReset) and warns that it has pending operations, and the volume
stays pending (hidden from `GET /volumes` and `GET /volumes/{id}`, its name in use, its space
taken) until the background cleaner, or `POST /operations/pending/cleanup`, rolls the
operation back: a create's, expand's or clone's bricks and volume are removed, a delete is
finished.

The simulator keeps the same records (`PendingOp`); with a state file (`statefile.py`) they
survive a kill as Heketi's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devtools.heketi_sim.model import Topology, Volume

# the simulator's operation kind -> Heketi's type_name
TYPE_NAMES = {"create": "create-volume", "delete": "delete-volume",
              "expand": "expand-volume", "clone": "clone-volume"}
NEW, STALE = "new", "stale"

# what Heketi logs at start when its db holds pending operations (app.go)
STARTUP_WARNING = (
    "Heketi has existing pending operations in the db. Heketi will attempt to automatically "
    "clean up these items. See the Heketi troubleshooting docs for more information about "
    "managing pending operations.")


@dataclass
class PendingOp:
    id: str
    kind: str  # a key of TYPE_NAMES
    volume_id: str
    bricks: list[str] = field(default_factory=list)  # bricks the operation adds or deletes
    status: str = NEW
    source_id: str = ""  # a clone's source volume

    def info(self, in_flight: bool) -> dict[str, Any]:
        """Heketi's PendingOperationInfo."""
        return {"id": self.id, "type_name": TYPE_NAMES[self.kind], "status": self.status,
                "sub_status": "in-flight" if in_flight else ""}

    def changes(self) -> list[dict[str, str]]:
        """Heketi's PendingChangeInfo list, in the order its Build records them."""
        if self.kind == "delete":
            return [*({"id": b, "description": "Delete brick"} for b in self.bricks),
                    {"id": self.volume_id, "description": "Delete volume"}]
        if self.kind == "expand":
            return [*({"id": b, "description": "Add brick"} for b in self.bricks),
                    {"id": self.volume_id, "description": "Expand volume"}]
        if self.kind == "clone":
            return [{"id": self.source_id, "description": "Clone volume"},
                    *({"id": b, "description": "Add brick"} for b in self.bricks),
                    {"id": self.volume_id, "description": "Add volume"}]
        return [*({"id": b, "description": "Add brick"} for b in self.bricks),
                {"id": self.volume_id, "description": "Add volume"}]


def counts(ops: list[PendingOp], in_flight: int) -> dict[str, int]:
    """Heketi's OperationsInfo (`GET /operations`)."""
    stale = sum(op.status == STALE for op in ops)
    return {"total": len(ops), "in_flight": in_flight, "stale": stale, "failed": 0,
            "new": len(ops) - stale}


def clean(topo: Topology, op: PendingOp) -> None:
    """Roll a stale operation back as Heketi's cleaner does (delete: finish it)."""
    volume = topo.volumes.get(op.volume_id)
    if op.kind == "expand":
        if volume is not None:
            drop_bricks(topo, volume, op.bricks)  # the volume keeps its size
        return
    if op.kind == "clone":
        source = topo.volumes.get(op.source_id)
        if source is not None:
            source.pending = None
    if volume is not None:
        topo.remove_volume(volume)


def drop_bricks(topo: Topology, volume: Volume, bricks: list[str]) -> None:
    """Take an expansion's bricks off the volume again and free them."""
    volume.bricks = [b for b in volume.bricks if b not in set(bricks)]
    topo.free_bricks(bricks)


MAX_CLEANUP_IDS = 32
_HEX = set("0123456789abcdefABCDEF")


def invalid_ids(ids: list[str]) -> str | None:
    """Heketi's ValidateIds for `POST /operations/pending/cleanup`: what is wrong, or None."""
    if len(ids) > MAX_CLEANUP_IDS:
        return f"too many ids specified ({len(ids)}), up to {MAX_CLEANUP_IDS} supported"
    for op_id in ids:
        if len(op_id) != 32 or not set(op_id) <= _HEX:
            return f"{op_id[:64]} is not a valid UUID"
    return None
