"""Nodes and devices that go offline or fail: Heketi v10's `POST /nodes/{id}/state` and
`POST /devices/{id}/state` rules, with its texts (apps/glusterfs node_entry.go and
device_entry.go, read, not copied).

* `online` <-> `offline` is a bookkeeping change. Placement (model.py) uses only online
  devices of online nodes, so a replica 3 volume on three nodes of which one is offline is
  `No space`.
* `failed` ("remove") needs the node or device offline first; a failed one never comes back
  online (a failed device may go offline again). Failing a device moves each of its bricks
  to another online device with room, on a node that holds no other brick of the same
  volume; when one brick finds no place, the device is left as it was.
* Failing a node fails each of its devices, then the node.
"""

from __future__ import annotations

from typing import Any

from devtools.heketi_sim.model import Brick, Device, Topology, brick_space_kib

STATES = ("online", "offline", "failed")
HEAL_CHECKS = ("", "enable", "disable")


class StateRefused(Exception):
    """The state change fails on the queue with this text (500)."""


def validate(msg: Any) -> str | None:
    """Heketi's StateRequest.Validate (heal check first, then the state), or None."""
    heal = msg.get("healcheck", "")
    if not isinstance(heal, str) or heal not in HEAL_CHECKS:
        return f"validation failed: healcheck: {heal} is not valid heal info check."
    state = msg.get("state", "")
    if not state:
        return "validation failed: state: cannot be blank."
    if state not in STATES:
        return f"validation failed: state: {state} is not valid state."
    return None


def parsable(msg: Any) -> bool:
    """Would Go's decoder take this body for a StateRequest?"""
    return (isinstance(msg, dict) and isinstance(msg.get("state", ""), str)
            and isinstance(msg.get("healcheck", ""), str))


def set_device_state(topo: Topology, device: Device, state: str) -> None:
    """Change a device's state as Heketi does, or raise StateRefused with its text."""
    if device.state == "failed" and state == "online":
        raise StateRefused("Cannot move a failed/removed device to online state")
    if device.state == "online" and state == "failed":
        raise StateRefused("Device must be offline before remove operation is performed, "
                           f"device:{device.id}")
    if device.state == state:
        return
    if state == "failed":
        _move_bricks_off(topo, device)
    device.state = state


def set_node_state(topo: Topology, node_id: str, state: str) -> None:
    node = topo.nodes[node_id]
    if node.state == "failed":
        if state == "failed":
            return
        raise StateRefused(f"Cannot move a failed/removed node to {state} state")
    if node.state == "online" and state == "failed":
        raise StateRefused("Node must be offline before remove operation is performed, "
                           f"node:{node.id}")
    if state == "failed":
        for device_id in node.devices:
            device = topo.devices[device_id]
            if device.state == "failed":
                continue
            try:
                _move_bricks_off(topo, device)
            except StateRefused:
                raise StateRefused(f"Unable to remove node [{node.id}] as no device was "
                                   f"found to replace device [{device.id}]") from None
            device.state = "failed"
    node.state = state


def _move_bricks_off(topo: Topology, device: Device) -> None:
    """Every brick of `device` to another device, or none (StateRefused)."""
    plan: list[tuple[Brick, Device]] = []
    taken: dict[str, int] = {}
    for brick_id in list(device.bricks):
        brick = topo.bricks[brick_id]
        target = _replacement(topo, brick, device, taken)
        if target is None:
            raise StateRefused(f"Unable to delete device [{device.id}] as no device was found "
                               "to replace it: No Replacement was found for resource "
                               "requested to be removed")
        taken[target.id] = taken.get(target.id, 0) + brick.reserved_kib
        plan.append((brick, target))
    for brick, target in plan:
        device.bricks.remove(brick.id)
        device.used_kib -= brick.reserved_kib
        brick.device_id, brick.node_id = target.id, target.node_id
        brick.path = f"/var/lib/heketi/mounts/vg_{target.id}/brick_{brick.id}/brick"
        target.bricks.append(brick.id)
        target.used_kib += brick.reserved_kib


def _replacement(topo: Topology, brick: Brick, source: Device,
                 taken: dict[str, int]) -> Device | None:
    volume = topo.volumes.get(brick.volume_id)
    siblings = {topo.bricks[b].node_id for b in (volume.bricks if volume else [])
                if b in topo.bricks and b != brick.id}
    need = brick.reserved_kib or brick_space_kib(brick.size_kib, 1.0)
    best: Device | None = None
    for node_id in topo.clusters[topo.nodes[source.node_id].cluster_id].nodes:
        node = topo.nodes[node_id]
        if node.state != "online" or node_id in siblings:
            continue
        for device_id in node.devices:
            candidate = topo.devices[device_id]
            if candidate.id == source.id or candidate.state != "online":
                continue
            free = candidate.free_kib - taken.get(candidate.id, 0)
            if free > need and (best is None or free > best.free_kib - taken.get(best.id, 0)):
                best = candidate
    return best
