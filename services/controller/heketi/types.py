"""Typed views of what Heketi sends and accepts (pkg/glusterfs/api/types.go, v10).

Sizes keep Heketi's units and say so in their names: volume sizes in GiB, brick and device
storage in KiB. Parsing is lenient about missing fields (older Heketi versions omit some)
and strict about types: a field of the wrong type is a `HeketiOperationFailed`, never a
silent zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from services.controller.heketi.errors import HeketiBadRequest, HeketiOperationFailed

VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
HEKETI_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
ROUTE_ID_RE = re.compile(r"^[A-Fa-f0-9]+$")  # what Heketi's routes accept as an id
DURABILITY_TYPES = ("none", "replicate", "disperse")
DISPERSE_ALLOWED = ((2, 1), (4, 2), (8, 3), (8, 4))
GID_LIMIT = 2**31 - 1  # Heketi refuses gid >= math.MaxInt32
SNAPSHOT_FACTOR_MAX = 100.0


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HeketiOperationFailed(f"Heketi sent {what} as {type(value).__name__}, not an object")
    return value


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise HeketiOperationFailed(f"Heketi sent {key!r} as {type(value).__name__}, not a string")
    return value


def _int(data: dict[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HeketiOperationFailed(f"Heketi sent {key!r} as {type(value).__name__}, not a number")
    return int(value)


def _float(data: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HeketiOperationFailed(f"Heketi sent {key!r} as {type(value).__name__}, not a number")
    return float(value)


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise HeketiOperationFailed(f"Heketi sent {key!r} as {type(value).__name__}, not a bool")
    return value


def _strs(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HeketiOperationFailed(f"Heketi sent {key!r} that is not a list of strings")
    return list(value)


def _objs(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise HeketiOperationFailed(f"Heketi sent {key!r} that is not a list")
    return [_obj(v, key) for v in value]


@dataclass(frozen=True)
class Durability:
    """How a volume survives failures: `none`, `replicate` (replica) or `disperse` (d+r)."""

    type: str = "none"
    replica: int = 0
    data: int = 0
    redundancy: int = 0

    @classmethod
    def replicate(cls, replica: int = 3) -> Durability:
        return cls("replicate", replica=replica)

    @classmethod
    def disperse(cls, data: int = 4, redundancy: int = 2) -> Durability:
        return cls("disperse", data=data, redundancy=redundancy)

    @property
    def raw_factor(self) -> float:
        """Raw device space per unit of volume size (replica, (d+r)/d, or 1)."""
        if self.type == "replicate":
            return float(max(self.replica, 1))
        if self.type == "disperse" and self.data:
            return (self.data + self.redundancy) / self.data
        return 1.0

    def to_json(self) -> dict[str, Any]:
        if self.type == "replicate":
            return {"type": "replicate", "replicate": {"replica": self.replica}}
        if self.type == "disperse":
            return {"type": "disperse",
                    "disperse": {"data": self.data, "redundancy": self.redundancy}}
        return {"type": self.type}

    @classmethod
    def from_json(cls, data: Any) -> Durability:
        d = _obj(data, "durability")
        kind = _str(d, "type") or "none"
        return cls(
            type=kind,
            replica=_int(_obj(d.get("replicate"), "replicate"), "replica"),
            data=_int(_obj(d.get("disperse"), "disperse"), "data"),
            redundancy=_int(_obj(d.get("disperse"), "disperse"), "redundancy"),
        )

    def validate(self) -> None:
        if self.type not in DURABILITY_TYPES:
            raise HeketiBadRequest(f"durability type {self.type!r} is not one of "
                                   f"{', '.join(DURABILITY_TYPES)}")
        if self.type == "replicate" and not 0 <= self.replica <= 3:
            raise HeketiBadRequest(f"replica {self.replica} is not supported (0..3; 0 means "
                                   "Heketi's default)")
        if self.type == "disperse" and (self.data, self.redundancy) not in DISPERSE_ALLOWED:
            allowed = ", ".join(f"{d}+{r}" for d, r in DISPERSE_ALLOWED)
            raise HeketiBadRequest(
                f"disperse {self.data}+{self.redundancy} is not supported (allowed: {allowed})")


@dataclass(frozen=True)
class Snapshot:
    """Thin-pool snapshot reserve: `factor` x size is allocated when `enable` is set."""

    enable: bool = False
    factor: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"enable": self.enable, "factor": self.factor}

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        d = _obj(data, "snapshot")
        return cls(enable=_bool(d, "enable"), factor=_float(d, "factor", 1.0))


@dataclass(frozen=True)
class VolumeCreateRequest:
    """The body of `POST /volumes`. Unset optional fields are left to Heketi's defaults."""

    size_gib: int
    name: str | None = None
    clusters: tuple[str, ...] = ()
    durability: Durability | None = None
    gid: int | None = None
    gluster_volume_options: tuple[str, ...] = ()
    snapshot: Snapshot | None = None

    def validate(self) -> None:
        """Raise `HeketiBadRequest` for what Heketi would refuse, before anything is sent."""
        if isinstance(self.size_gib, bool) or not isinstance(self.size_gib, int) \
                or self.size_gib < 1:
            raise HeketiBadRequest(f"volume size must be a whole number of GiB >= 1, "
                                   f"not {self.size_gib!r}")
        if self.name is not None and not VOLUME_NAME_RE.match(self.name):
            raise HeketiBadRequest(f"volume name {self.name!r} may only hold letters, digits, "
                                   "'_' and '-'")
        for cluster in self.clusters:
            if not HEKETI_ID_RE.match(cluster):
                raise HeketiBadRequest(f"cluster id {cluster!r} is not a Heketi id "
                                       "(32 hex characters)")
        if self.durability is not None:
            self.durability.validate()
        if self.gid is not None and not 0 <= self.gid < GID_LIMIT:
            raise HeketiBadRequest(f"gid {self.gid} is outside 0..{GID_LIMIT - 1}")
        if self.snapshot is not None and self.snapshot.enable \
                and not 1.0 <= self.snapshot.factor <= SNAPSHOT_FACTOR_MAX:
            raise HeketiBadRequest(f"snapshot factor {self.snapshot.factor} is outside "
                                   f"1..{SNAPSHOT_FACTOR_MAX:g}")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"size": self.size_gib}
        if self.name is not None:
            body["name"] = self.name
        if self.clusters:
            body["clusters"] = list(self.clusters)
        if self.durability is not None:
            body["durability"] = self.durability.to_json()
        if self.gid is not None:
            body["gid"] = self.gid
        if self.gluster_volume_options:
            body["glustervolumeoptions"] = list(self.gluster_volume_options)
        if self.snapshot is not None:
            body["snapshot"] = self.snapshot.to_json()
        return body


@dataclass(frozen=True)
class BrickInfo:
    id: str
    path: str
    size_kib: int
    node: str
    device: str
    volume: str = ""

    @classmethod
    def from_json(cls, data: Any) -> BrickInfo:
        d = _obj(data, "brick")
        return cls(id=_str(d, "id"), path=_str(d, "path"), size_kib=_int(d, "size"),
                   node=_str(d, "node"), device=_str(d, "device"), volume=_str(d, "volume"))


@dataclass(frozen=True)
class GlusterMount:
    """`mount.glusterfs` of a volume: where and how a client mounts it."""

    hosts: tuple[str, ...]
    device: str  # "<host>:<volume name>"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def backup_volfile_servers(self) -> tuple[str, ...]:
        """Heketi lists them comma-separated; empty entries are dropped."""
        raw = self.options.get("backup-volfile-servers", "")
        return tuple(h for h in (p.strip() for p in raw.split(",")) if h)

    def mount_options(self) -> list[str]:
        """Options for `mount -t glusterfs` (the helper wants ':'-separated servers)."""
        backups = self.backup_volfile_servers
        return [f"backup-volfile-servers={':'.join(backups)}"] if backups else []

    @classmethod
    def from_json(cls, data: Any) -> GlusterMount:
        d = _obj(_obj(data, "mount").get("glusterfs"), "mount.glusterfs")
        options = _obj(d.get("options"), "mount.glusterfs.options")
        return cls(hosts=tuple(_strs(d, "hosts")), device=_str(d, "device"),
                   options={str(k): str(v) for k, v in options.items()})


@dataclass(frozen=True)
class VolumeInfo:
    """`GET /volumes/{id}`."""

    id: str
    name: str
    cluster: str
    size_gib: int
    durability: Durability
    snapshot: Snapshot
    gid: int
    mount: GlusterMount
    bricks: tuple[BrickInfo, ...] = ()
    gluster_volume_options: tuple[str, ...] = ()
    block: bool = False

    @property
    def raw_size_kib(self) -> int:
        """Brick space the volume occupies on devices (sum of its bricks, in KiB)."""
        return sum(b.size_kib for b in self.bricks)

    @classmethod
    def from_json(cls, data: Any) -> VolumeInfo:
        d = _obj(data, "volume")
        info = cls(
            id=_str(d, "id"),
            name=_str(d, "name"),
            cluster=_str(d, "cluster"),
            size_gib=_int(d, "size"),
            durability=Durability.from_json(d.get("durability")),
            snapshot=Snapshot.from_json(d.get("snapshot")),
            gid=_int(d, "gid"),
            mount=GlusterMount.from_json(d.get("mount")),
            bricks=tuple(BrickInfo.from_json(b) for b in _objs(d, "bricks")),
            gluster_volume_options=tuple(o for o in _strs(d, "glustervolumeoptions") if o),
            block=_bool(d, "block"),
        )
        if not info.id or not info.name:
            raise HeketiOperationFailed("Heketi sent a volume without id or name")
        return info


@dataclass(frozen=True)
class StorageSize:
    total_kib: int
    free_kib: int
    used_kib: int

    @classmethod
    def from_json(cls, data: Any) -> StorageSize:
        d = _obj(data, "storage")
        return cls(total_kib=_int(d, "total"), free_kib=_int(d, "free"), used_kib=_int(d, "used"))


@dataclass(frozen=True)
class DeviceInfo:
    """`GET /devices/{id}`, also each entry of a node's `devices`."""

    id: str
    name: str
    state: str
    storage: StorageSize
    bricks: tuple[BrickInfo, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> DeviceInfo:
        d = _obj(data, "device")
        tags = _obj(d.get("tags"), "tags")
        return cls(id=_str(d, "id"), name=_str(d, "name"), state=_str(d, "state"),
                   storage=StorageSize.from_json(d.get("storage")),
                   bricks=tuple(BrickInfo.from_json(b) for b in _objs(d, "bricks")),
                   tags={str(k): str(v) for k, v in tags.items()})


@dataclass(frozen=True)
class NodeInfo:
    """`GET /nodes/{id}`."""

    id: str
    cluster: str
    zone: int
    manage_hostnames: tuple[str, ...]
    storage_hostnames: tuple[str, ...]
    state: str
    devices: tuple[DeviceInfo, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> NodeInfo:
        d = _obj(data, "node")
        hostnames = _obj(d.get("hostnames"), "hostnames")
        return cls(id=_str(d, "id"), cluster=_str(d, "cluster"), zone=_int(d, "zone"),
                   manage_hostnames=tuple(_strs(hostnames, "manage")),
                   storage_hostnames=tuple(_strs(hostnames, "storage")),
                   state=_str(d, "state"),
                   devices=tuple(DeviceInfo.from_json(x) for x in _objs(d, "devices")))


@dataclass(frozen=True)
class ClusterInfo:
    """`GET /clusters/{id}`."""

    id: str
    nodes: tuple[str, ...]
    volumes: tuple[str, ...]
    block: bool
    file: bool
    block_volumes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ClusterInfo:
        d = _obj(data, "cluster")
        return cls(id=_str(d, "id"), nodes=tuple(_strs(d, "nodes")),
                   volumes=tuple(_strs(d, "volumes")), block=_bool(d, "block"),
                   file=_bool(d, "file"), block_volumes=tuple(_strs(d, "blockvolumes")))
