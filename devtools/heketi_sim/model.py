"""The simulator's data: clusters, nodes, devices, volumes and bricks, and brick placement.

Sizes follow Heketi: volumes in GiB, bricks and device storage in KiB. Placement follows
Heketi v10's allocator where a client can tell:

* a volume is one or more brick sets (`replica` bricks, `data+redundancy` bricks for
  disperse, or one brick); no two bricks of one set are ever on the same node (Heketi's
  standard placer), so disperse 4+2 on three nodes is `No space` whatever the devices;
* brick sizes come from Heketi's generator: one set of `size` (divided by `data` for
  disperse), halved while the set does not fit, with the set count doubled; a brick below
  1 GiB is `Minimum brick size limit reached.  Out of space.`, a brick above 4 TiB is
  halved straight away, and a volume of more than 32 bricks (counting the ones it has) is
  `Maximum number of bricks reached.`. A create reports all three as `No space`; an
  expansion reports them as they are;
* each brick takes a thin pool of `size x snapshot factor` plus 0.5 % pool metadata, each
  rounded up to the 4 MiB LVM extent, and fits only where the device has MORE free space
  than that (Heketi's `Free > amount`);
* only online devices of online nodes take bricks, and in pool mode not a node Heketi's
  health monitor found down (node_health.py);
* the device with the most free space among the allowed ones takes the brick (Heketi walks a
  ring in pseudo-random order; which device is picked is not something a client relies on).

A clone's bricks live in its source's thin pools and take no new space, as in Heketi
(prepareVolumeClone: "clones do not take extra storage space"): the source's create already
reserved `size x snapshot factor` per brick for the pool that holds the snapshots and the
clones. A pool's space comes back only with the last brick in it (Heketi frees it when
DestroyBricks reports the thin pool gone): deleting a source whose clone lives frees nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

GIB_KIB = 1024 * 1024
EXTENT_KIB = 4 * 1024  # LVM's default physical extent
BRICK_MIN_KIB = GIB_KIB  # Heketi's BrickMinSize
BRICK_MAX_KIB = 4 * 1024 * GIB_KIB  # BrickMaxSize
BRICK_MAX_NUM = 32  # BrickMaxNum: bricks per volume
POOL_METADATA_RATIO = 0.005
POOL_METADATA_MAX_KIB = 16 * GIB_KIB


def new_id() -> str:
    """A Heketi id: 32 lower-case hex characters."""
    return secrets.token_hex(16)


class NoSpace(Exception):
    """Placement failed; the text is Heketi's (`No space`)."""

    def __init__(self, text: str = "No space") -> None:
        super().__init__(text)


class MaxBricks(NoSpace):
    """The volume would have more than BRICK_MAX_NUM bricks (Heketi's ErrMaxBricks)."""

    def __init__(self) -> None:
        super().__init__("Maximum number of bricks reached.")


class MinimumBrickSize(NoSpace):
    """Halving made the bricks smaller than BRICK_MIN_KIB (Heketi's ErrMinimumBrickSize)."""

    def __init__(self) -> None:
        super().__init__("Minimum brick size limit reached.  Out of space.")


def _round_up(kib: int, unit: int = EXTENT_KIB) -> int:
    return -(-kib // unit) * unit


def brick_space_kib(brick_kib: int, factor: float) -> int:
    """Device space a brick takes: its thin pool (size x factor) plus the pool's metadata
    (0.5 %, at most 16 GiB), each rounded up to the extent; Heketi's SpaceNeeded."""
    pool = _round_up(int(brick_kib * factor))
    metadata = _round_up(min(int(pool * POOL_METADATA_RATIO), POOL_METADATA_MAX_KIB))
    return pool + metadata


def brick_sizes(size_kib: int, data: int) -> Iterator[tuple[int, int]]:
    """(sets, brick KiB) to try, largest bricks first: Heketi's BrickSizeGenerator.

    Raises MinimumBrickSize when the next size would be below the minimum.
    """
    sets = 1
    while True:
        brick = size_kib // sets // data
        if brick < BRICK_MIN_KIB:
            raise MinimumBrickSize()
        if brick <= BRICK_MAX_KIB:
            yield sets, brick
        sets *= 2


@dataclass
class Device:
    id: str
    node_id: str
    name: str
    total_kib: int
    used_kib: int = 0
    bricks: list[str] = field(default_factory=list)
    state: str = "online"

    @property
    def free_kib(self) -> int:
        return self.total_kib - self.used_kib


@dataclass
class Node:
    id: str
    cluster_id: str
    zone: int
    manage: str
    storage: str
    devices: list[str] = field(default_factory=list)
    state: str = "online"
    # What Heketi's health monitor last found (node_health.py): None before the first check.
    up: bool | None = None


@dataclass
class Cluster:
    id: str
    nodes: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    block: bool = False
    file: bool = True


@dataclass
class Brick:
    id: str
    path: str
    device_id: str
    node_id: str
    volume_id: str
    size_kib: int
    # Space taken on the device for the thin pool this brick holds the last claim on (its
    # own pool and metadata; 0 for a clone's bricks, until it is the pool's last brick).
    reserved_kib: int
    # The thin pool: the id of the brick it was made for (a clone's bricks share it).
    pool: str = ""

    def __post_init__(self) -> None:
        self.pool = self.pool or self.id


@dataclass
class Volume:
    id: str
    name: str
    cluster_id: str
    size_gib: int
    durability: dict[str, Any]
    snapshot: dict[str, Any]
    gid: int = 0
    options: list[str] = field(default_factory=list)
    bricks: list[str] = field(default_factory=list)
    # None when visible; otherwise what holds it ("create", "delete", "clone-source", ...).
    # Heketi hides pending volumes from GET /volumes and GET /volumes/{id}.
    pending: str | None = None
    # Set when a real gluster volume backs this one (glusterd mode).
    real_brick: str | None = None

    @property
    def visible(self) -> bool:
        return self.pending is None

    # Heketi's JSON names, for tests that read the simulator's state directly.
    @property
    def cluster(self) -> str:
        return self.cluster_id

    @property
    def size(self) -> int:
        return self.size_gib


def go_float(value: float) -> float | int:
    """A number as Go's encoding/json writes a float: whole numbers without a fraction."""
    return int(value) if value.is_integer() else value


def durability_shape(durability: dict[str, Any]) -> tuple[int, int]:
    """(bricks per set, data bricks per set) for a durability block."""
    kind = durability.get("type") or "none"
    if kind == "replicate":
        return int(durability.get("replicate", {}).get("replica") or 2), 1
    if kind == "disperse":
        d = durability.get("disperse", {})
        data, redundancy = int(d.get("data") or 4), int(d.get("redundancy") or 2)
        return data + redundancy, data
    return 1, 1


@dataclass
class Topology:
    clusters: dict[str, Cluster] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    bricks: dict[str, Brick] = field(default_factory=dict)

    @classmethod
    def build(cls, *, clusters: int, nodes: int, devices_per_node: int, device_size_gib: int,
              storage_hosts: list[str] | None = None) -> Topology:
        """`clusters` clusters of `nodes` nodes (one zone each) with equal devices."""
        topo = cls()
        for c in range(clusters):
            cluster = Cluster(new_id())
            topo.clusters[cluster.id] = cluster
            for n in range(nodes):
                number = c * nodes + n + 1
                storage = (storage_hosts[n % len(storage_hosts)] if storage_hosts
                           else f"192.0.2.{number}")
                node = Node(new_id(), cluster.id, zone=n + 1,
                            manage=f"sim-node-{number}.heketi-sim.test", storage=storage)
                topo.nodes[node.id] = node
                cluster.nodes.append(node.id)
                for d in range(devices_per_node):
                    device = Device(new_id(), node.id, f"/dev/vd{chr(ord('b') + d)}",
                                    total_kib=device_size_gib * GIB_KIB)
                    topo.devices[device.id] = device
                    node.devices.append(device.id)
        return topo

    # --- placement ------------------------------------------------------------------
    def allocate(self, volume: Volume, add_gib: int, factor: float) -> list[Brick]:
        """Place bricks for `add_gib` GiB more of `volume` in its cluster.

        Raises MaxBricks, MinimumBrickSize or NoSpace (Heketi's allocBricksInCluster). The
        bricks are recorded (device space taken) but not yet attached to the volume.
        """
        per_set, data = durability_shape(volume.durability)
        for sets, brick_kib in brick_sizes(add_gib * GIB_KIB, data):
            if sets * per_set + len(volume.bricks) > BRICK_MAX_NUM:
                raise MaxBricks()
            placed = self._try_place(volume, sets, per_set, brick_kib, factor)
            if placed is not None:
                return placed
        raise NoSpace()  # not reached: brick_sizes ends by raising

    def _try_place(self, volume: Volume, sets: int, per_set: int, brick_kib: int,
                   factor: float) -> list[Brick] | None:
        reserved = brick_space_kib(brick_kib, factor)
        cluster = self.clusters[volume.cluster_id]
        extra: dict[str, int] = {}  # device id -> KiB taken by this attempt
        chosen: list[tuple[str, str]] = []  # (node id, device id)
        for _ in range(sets):
            used_nodes: set[str] = set()  # no two bricks of a set on one node
            for _ in range(per_set):
                best: Device | None = None
                best_free = 0
                for node_id in cluster.nodes:
                    node = self.nodes[node_id]
                    if node.state != "online" or node.up is False or node_id in used_nodes:
                        continue
                    for device_id in node.devices:
                        device = self.devices[device_id]
                        if device.state != "online":
                            continue
                        free = device.free_kib - extra.get(device_id, 0)
                        if free > reserved and (best is None or free > best_free):
                            best, best_free = device, free
                if best is None:
                    return None
                used_nodes.add(best.node_id)
                extra[best.id] = extra.get(best.id, 0) + reserved
                chosen.append((best.node_id, best.id))
        bricks = []
        for node_id, device_id in chosen:
            brick_id = new_id()
            path = f"/var/lib/heketi/mounts/vg_{device_id}/brick_{brick_id}/brick"
            brick = Brick(brick_id, path, device_id, node_id, volume.id, brick_kib, reserved)
            self.bricks[brick_id] = brick
            device = self.devices[device_id]
            device.used_kib += reserved
            device.bricks.append(brick_id)
            bricks.append(brick)
        return bricks

    def free_bricks(self, brick_ids: list[str]) -> None:
        """Remove bricks; a thin pool's space comes back with the last brick in it."""
        for brick_id in brick_ids:
            brick = self.bricks.pop(brick_id, None)
            if brick is None:
                continue
            device = self.devices[brick.device_id]
            sharer = next((b for b in self.bricks.values() if b.pool == brick.pool), None)
            if sharer is not None:
                sharer.reserved_kib += brick.reserved_kib  # the pool stays, and its claim
            else:
                device.used_kib -= brick.reserved_kib
            if brick_id in device.bricks:
                device.bricks.remove(brick_id)

    def clone_bricks(self, source: Volume, clone: Volume) -> list[Brick]:
        """Bricks for a clone: in the source bricks' thin pools, no extra space."""
        bricks = []
        for brick_id in source.bricks:
            src = self.bricks[brick_id]
            new = new_id()
            path = f"/var/lib/heketi/mounts/vg_{src.device_id}/brick_{new}/brick"
            brick = Brick(new, path, src.device_id, src.node_id, clone.id, src.size_kib, 0,
                          pool=src.pool)
            self.bricks[new] = brick
            self.devices[src.device_id].bricks.append(new)
            bricks.append(brick)
        return bricks

    def remove_volume(self, volume: Volume) -> None:
        self.free_bricks(volume.bricks)
        cluster = self.clusters.get(volume.cluster_id)
        if cluster is not None and volume.id in cluster.volumes:
            cluster.volumes.remove(volume.id)
        self.volumes.pop(volume.id, None)

    def names_in(self, cluster_id: str) -> set[str]:
        return {self.volumes[v].name for v in self.clusters[cluster_id].volumes
                if v in self.volumes}

    # --- Heketi's JSON --------------------------------------------------------------
    def storage_hosts(self, cluster_id: str) -> list[str]:
        # Heketi keeps a cluster's node ids sorted and lists the mount hosts in that order
        # (getHostsFromCluster), as `GET /clusters/{id}` lists the nodes
        return [self.nodes[n].storage for n in sorted(self.clusters[cluster_id].nodes)]

    def brick_json(self, brick: Brick) -> dict[str, Any]:
        return {"id": brick.id, "path": brick.path, "device": brick.device_id,
                "node": brick.node_id, "volume": brick.volume_id, "size": brick.size_kib}

    def volume_json(self, volume: Volume) -> dict[str, Any]:
        hosts = self.storage_hosts(volume.cluster_id)
        durability = {"type": volume.durability.get("type", "none"),
                      "replicate": dict(volume.durability.get("replicate", {})),
                      "disperse": dict(volume.durability.get("disperse", {}))}
        body: dict[str, Any] = {
            "size": volume.size_gib,
            "name": volume.name,
            "durability": durability,
            "snapshot": {"enable": bool(volume.snapshot.get("enable")),
                         "factor": go_float(float(volume.snapshot.get("factor") or 1))},
            "id": volume.id,
            "cluster": volume.cluster_id,
            "mount": {"glusterfs": {
                "hosts": hosts,
                "device": f"{hosts[0]}:{volume.name}",
                "options": {"backup-volfile-servers": ",".join(hosts[1:])},
            }},
            "blockinfo": {},
            "bricks": [self.brick_json(self.bricks[b]) for b in volume.bricks
                       if b in self.bricks],
        }
        if volume.gid:
            body["gid"] = volume.gid
        # Heketi stores the request's options between its pre- and post-request options
        # (empty by default) and always sends the list.
        body["glustervolumeoptions"] = list(volume.options)
        return body

    def device_json(self, device: Device) -> dict[str, Any]:
        return {
            "name": device.name,
            "storage": {"total": device.total_kib, "free": device.free_kib,
                        "used": device.used_kib},
            "id": device.id,
            "state": device.state,
            "bricks": [self.brick_json(self.bricks[b]) for b in device.bricks
                       if b in self.bricks],
        }

    def node_json(self, node: Node) -> dict[str, Any]:
        return {
            "zone": node.zone,
            "hostnames": {"manage": [node.manage], "storage": [node.storage]},
            "cluster": node.cluster_id,
            "id": node.id,
            "state": node.state,
            "devices": [self.device_json(self.devices[d]) for d in node.devices],
        }

    def cluster_json(self, cluster: Cluster) -> dict[str, Any]:
        return {
            "id": cluster.id,
            "nodes": sorted(cluster.nodes),
            "volumes": sorted(v for v in cluster.volumes
                              if v in self.volumes and self.volumes[v].visible),
            "block": cluster.block,
            "file": cluster.file,
            "blockvolumes": [],
        }
