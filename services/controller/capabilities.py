"""Checks of volume capabilities and capacity ranges shared by the controller RPCs."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.errors import InvalidArgument, OutOfRange
from services.common.proto import csi_pb2

GIB = 1 << 30
_Mode = csi_pb2.VolumeCapability.AccessMode.Mode

# GlusterFS is a shared file system: every access mode can be served.
SUPPORTED_MODES = frozenset({
    _Mode.SINGLE_NODE_WRITER, _Mode.SINGLE_NODE_READER_ONLY, _Mode.MULTI_NODE_READER_ONLY,
    _Mode.MULTI_NODE_SINGLE_WRITER, _Mode.MULTI_NODE_MULTI_WRITER,
    _Mode.SINGLE_NODE_SINGLE_WRITER, _Mode.SINGLE_NODE_MULTI_WRITER,
})


def capability_problem(cap: csi_pb2.VolumeCapability) -> str | None:
    """Why this driver cannot serve `cap`, or None when it can."""
    if cap.WhichOneof("access_type") == "block":
        return "raw block volumes are not supported: GlusterFS volumes are file systems"
    if cap.WhichOneof("access_type") != "mount":
        return "volume capability needs an access type (mount)"
    fs_type = cap.mount.fs_type
    if fs_type and fs_type != "glusterfs":
        return f"fs_type {fs_type!r} is not supported; GlusterFS volumes mount as 'glusterfs'"
    if not cap.HasField("access_mode") or cap.access_mode.mode == _Mode.UNKNOWN:
        return "volume capability needs an access mode"
    if cap.access_mode.mode not in SUPPORTED_MODES:
        return f"access mode {cap.access_mode.mode} is not supported"
    return None


def require_capabilities(caps: Iterable[csi_pb2.VolumeCapability]) -> None:
    items = list(caps)
    if not items:
        raise InvalidArgument("volume_capabilities is required")
    for cap in items:
        problem = capability_problem(cap)
        if problem:
            raise InvalidArgument(problem)


def require_capability(cap: csi_pb2.VolumeCapability, present: bool) -> None:
    if not present:
        raise InvalidArgument("volume_capability is required")
    problem = capability_problem(cap)
    if problem:
        raise InvalidArgument(problem)


def size_gib(capacity: csi_pb2.CapacityRange, present: bool, default_gib: int = 1) -> int:
    """Whole GiB to allocate for a capacity range (rounding up); OUT_OF_RANGE if impossible."""
    if not present:
        return default_gib
    required, limit = capacity.required_bytes, capacity.limit_bytes
    if required < 0 or limit < 0:
        raise OutOfRange("capacity bytes must not be negative")
    if limit and required > limit:
        raise OutOfRange(f"required_bytes {required} exceeds limit_bytes {limit}")
    gib = max(1, -(-required // GIB)) if required else max(1, default_gib)
    if limit and gib * GIB > limit:
        if limit < GIB:
            raise OutOfRange(
                f"limit_bytes {limit} is below 1 GiB, the smallest volume Heketi creates")
        gib = limit // GIB
        if gib * GIB < required:
            raise OutOfRange(
                f"no whole number of GiB lies between required_bytes {required} and "
                f"limit_bytes {limit}; Heketi allocates whole GiB")
    return int(gib)


def fits(size: int, capacity: csi_pb2.CapacityRange, present: bool) -> bool:
    """True when an existing volume of `size` GiB satisfies the capacity range."""
    if not present:
        return True
    if capacity.required_bytes and size * GIB < capacity.required_bytes:
        return False
    return not (capacity.limit_bytes and size * GIB > capacity.limit_bytes)
