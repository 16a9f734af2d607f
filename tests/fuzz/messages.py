"""CSI requests generated from the protobuf descriptors, every field of every RPC.

`rpcs()` lists the Identity (on both sockets), Controller and Node RPCs from `csi_pb2`'s
service descriptors. `request(world, rpc)` builds a request message field by field from its
descriptor: each field (recursively, oneofs included) is set or left unset; a field the
driver interprets (ids, paths, contexts, secrets, parameters, mount flags, sizes, names,
capabilities) gets a domain strategy from `values`, every other field a generic one for its
type. Nothing is specific to one RPC, so a field added to the spec is fuzzed too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from services.common.proto import csi_pb2
from tests.fuzz import values as v
from tests.fuzz.values import Strategy, Tagged, World

MAX_DEPTH = 5
T = FieldDescriptor
_INT_RANGES = {
    T.TYPE_INT32: (-(1 << 31), (1 << 31) - 1), T.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    T.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1), T.TYPE_UINT32: (0, (1 << 32) - 1),
    T.TYPE_FIXED32: (0, (1 << 32) - 1), T.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    T.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1), T.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    T.TYPE_UINT64: (0, (1 << 64) - 1), T.TYPE_FIXED64: (0, (1 << 64) - 1),
}
SERVICES = ("Identity", "Controller", "Node")
# Fields a plausible request sets (when present in its message type).
CALM_FIELDS = frozenset({
    "volume_id", "source_volume_id", "snapshot_id", "staging_target_path", "target_path",
    "volume_path", "node_id", "name", "secrets", "volume_context", "publish_context",
    "capacity_range", "volume_capability", "volume_capabilities"})
PATH_FIELDS = frozenset({"staging_target_path", "target_path", "volume_path"})
AccessMode = csi_pb2.VolumeCapability.AccessMode
GOOD_MODES = [AccessMode.MULTI_NODE_MULTI_WRITER, AccessMode.SINGLE_NODE_WRITER,
              AccessMode.MULTI_NODE_READER_ONLY]
GIB = 1 << 30


@dataclass(frozen=True)
class Rpc:
    service: str
    method: str
    request_type: type[Message]
    socket: str  # "controller" or "node"

    @property
    def label(self) -> str:
        return f"{self.service}.{self.method}@{self.socket}"


@dataclass
class FuzzRequest:
    rpc: Rpc
    message: Message
    tags: list[str] = field(default_factory=list)  # "field.path:what is hostile"
    fields_set: set[str] = field(default_factory=set)  # top-level fields the fuzz set

    def hostile_fields(self) -> str:
        return "; ".join(self.tags) or "(no hostile field: an ordinary request)"


def rpcs() -> list[Rpc]:
    found = []
    for service in SERVICES:
        descriptor = csi_pb2.DESCRIPTOR.services_by_name[service]
        sockets = ("controller", "node") if service == "Identity" else (service.lower(),)
        for method in descriptor.methods:
            request_type = getattr(csi_pb2, method.input_type.name)
            for sock in sockets:
                found.append(Rpc(service, method.name, request_type, sock))
    return found


def _access_modes() -> list[int]:
    mode = csi_pb2.VolumeCapability.AccessMode.DESCRIPTOR.fields_by_name["mode"]
    return [*_enum_numbers(mode), 99]


class Builder:
    """Draws one request; `tags` and `fields_set` record what it drew."""

    def __init__(self, world: World, draw: st.DrawFn, rpc: Rpc) -> None:
        self.world = world
        self.draw = draw
        self.rpc = rpc
        self.tags: list[str] = []
        self.touched: set[str] = set()  # top-level fields given a value (maybe the default)
        mode = draw(st.integers(0, 9))
        self.full = mode == 0  # every field set, to anything
        self.calm = 1 <= mode <= 6  # one hostile field, the rest good
        self.attack = mode in (5, 6)  # ... and that field a path leading outside the root
        self.good = False  # building a field that gets a good value

    # --- domain values by field name ----------------------------------------------------------
    def _domain(self, owner: Descriptor, f: FieldDescriptor) -> Callable[[], Tagged] | None:
        """A thunk drawing a domain value for field `f` of `owner`, or None (generic)."""
        w, d, name = self.world, self.draw, f.name

        def strategy(s: Callable[[], Strategy]) -> Callable[[], Tagged]:
            return lambda: d(s())

        by_name: dict[str, Callable[[], Tagged]] = {
            "volume_id": lambda: v.object_id(d, w, "hv1", self._volume_ids(owner)),
            "source_volume_id": lambda: v.object_id(d, w, "hv1", list(w.volumes)),
            "snapshot_id": lambda: v.object_id(d, w, "hs1", list(w.snapshots)),
            "staging_target_path": strategy(lambda: self._path("staging")),
            "target_path": strategy(lambda: self._path("target")),
            "volume_path": strategy(lambda: v.weighted((1, self._path("staging")),
                                                       (1, self._path("target")))),
            "node_id": strategy(lambda: v.weighted((60, v.fixed(w.node_id)), (40, v.text()))),
            "name": strategy(lambda: v.weighted(
                (50, v.pool(w.snapshot_names if "Snapshot" in owner.name else w.volume_names)),
                (40, v.text()))),
            "secrets": lambda: v.secrets(d, w),
            "parameters": lambda: v.parameters(d, w),
            "mutable_parameters": lambda: v.parameters(d, w),
            "volume_context": lambda: v.context(d, w),
            "publish_context": lambda: v.context(d, w),
            "fs_type": strategy(lambda: v.weighted((40, v.pool(["", "glusterfs"])),
                                                   (10, v.pool(["ext4", "nfs"], "other-fs")),
                                                   (5, v.text()))),
            "required_bytes": strategy(v.byte_count),
            "limit_bytes": strategy(v.byte_count),
            "starting_token": strategy(lambda: v.weighted(
                (20, v.pool(["1", "2", "5"])),
                (10, v.pool(["0", "-1", "999999", "x"], "bad-token")), (10, v.text()))),
        }
        if self.good and name in by_name:
            return self._good(owner, name)
        thunk = by_name.get(name)
        if thunk is None or (f.type == T.TYPE_MESSAGE and not _is_map(f)):
            return None
        return thunk

    def _good(self, owner: Descriptor, name: str) -> Callable[[], Tagged]:
        """A value the driver should accept (or at least expect) for field `name`."""
        w, d = self.world, self.draw
        fixture = w.fixtures[0] if w.fixtures else ""
        staging = w.staging_pool[0] if w.staging_pool else ""

        def often(value: Any, others: Callable[[], Any]) -> Callable[[], Tagged]:
            def thunk() -> Tagged:
                usual = d(st.integers(0, 3)) < 3
                other = others()
                return (value if usual else other), None
            return thunk

        good: dict[str, Callable[[], Tagged]] = {
            "volume_id": often(fixture, lambda: v.pick(d, self._volume_ids(owner), fixture))
            if owner.name != "DeleteVolumeRequest"
            else lambda: (v.pick(d, self._volume_ids(owner), ""), None),
            "source_volume_id": often(fixture, lambda: v.pick(d, list(w.volumes), fixture)),
            "snapshot_id": lambda: (v.pick(d, w.snapshots, ""), None),
            "staging_target_path": often(staging, lambda: v.pick(d, w.staging_pool, "")),
            "target_path": lambda: (v.pick(d, w.target_pool, ""), None),
            "volume_path": lambda: (v.pick(d, w.target_pool + w.staging_pool, ""), None),
            "node_id": lambda: (w.node_id, None),
            "name": lambda: (v.pick(d, w.snapshot_names if "Snapshot" in owner.name
                                    else w.volume_names, ""), None),
            "secrets": lambda: v.secrets(d, w),
            "parameters": lambda: ({}, None),
            "mutable_parameters": lambda: ({}, None),
            "volume_context": lambda: (dict(w.mountable[0] if w.mountable else {}), None),
            "publish_context": lambda: ({}, None),
            "fs_type": lambda: ("", None),
            "required_bytes": lambda: (GIB, None),
            "limit_bytes": lambda: (0, None),
            "starting_token": lambda: ("", None),
        }
        return good[name]

    def _path(self, kind: str) -> Strategy:
        return v.attack_path(self.world, kind) if self.attack else v.path(self.world, kind)

    def _volume_ids(self, owner: Descriptor) -> list[str]:
        if owner.name == "DeleteVolumeRequest":  # never the fixtures the node work uses
            return [i for i in self.world.volumes if i not in self.world.protected]
        return list(self.world.volumes)

    # --- building -----------------------------------------------------------------------------
    def message(self, descriptor: Descriptor, prefix: str, depth: int = 0) -> Message:
        cls = _message_class(descriptor)
        msg = cls()
        if depth >= MAX_DEPTH:
            return msg
        if depth == 0 and self.calm:
            # A plausible request with one hostile field: the fields the driver reads get
            # good values, the others stay unset, and `hostile` gets anything.
            names = [f.name for f in descriptor.fields]
            paths = [n for n in names if n in PATH_FIELDS]
            # Fields the driver reads are three times as likely to be the hostile one.
            choices = (paths if self.attack and paths else
                       [n for n in names for _ in range(3 if n in CALM_FIELDS else 1)])
            hostile = self.draw(st.sampled_from(choices or [""]))
            for f in descriptor.fields:
                if f.name == hostile or (f.name in CALM_FIELDS and f.containing_oneof is None):
                    self.good = f.name != hostile
                    self._set(msg, descriptor, f, f"{prefix}.{f.name}", depth)
            self.good = False
            return msg
        for f in self._fields_to_set(descriptor):
            self._set(msg, descriptor, f, f"{prefix}.{f.name}", depth)
        return msg

    def _fields_to_set(self, descriptor: Descriptor) -> list[FieldDescriptor]:
        chosen = [f for f in descriptor.fields if f.containing_oneof is None
                  and (self.draw(st.integers(0, 9)) < 8 or self.full)]
        for oneof in descriptor.oneofs:
            options = list(oneof.fields) if self.full else [*oneof.fields, None]
            pick = self.draw(st.sampled_from(options))
            if pick is not None:
                chosen.append(pick)
        return chosen

    def _set(self, msg: Message, owner: Descriptor, f: FieldDescriptor, where: str,
             depth: int) -> None:
        if depth == 0:
            self.touched.add(f.name)
        domain = self._domain(owner, f)
        if _is_map(f):
            value, label = domain() if domain is not None else self._generic_map(f)
            getattr(msg, f.name).update(value)
        elif f.name in ("volume_capability", "volume_capabilities"):
            counts = [1] if self.good else [1, 1, 1, 0, 2, 3]
            caps = [self._capability(where, depth)
                    for _ in range(self.draw(st.sampled_from(counts)))]
            if f.is_repeated:
                getattr(msg, f.name).extend(caps)
            elif caps:
                getattr(msg, f.name).CopyFrom(caps[0])
            return
        elif f.is_repeated and f.type == T.TYPE_MESSAGE:
            count = self.draw(st.sampled_from([1, 0, 2, 1, 3, 0] * 5 + [1000]))
            if count == 1000:
                items = [self.message(_sub(f), where, depth + 1)] * count
                label = "1000-entries"
            else:
                items = [self.message(_sub(f), where, depth + 1) for _ in range(count)]
                label = None
            getattr(msg, f.name).extend(items)
        elif f.is_repeated:
            strategy = v.mount_flag(self.world) if f.name == "mount_flags" else self._scalar(f)
            value, label = v.many(self.draw, strategy, where)
            getattr(msg, f.name).extend(value)
        elif f.type == T.TYPE_MESSAGE and self.good:
            sub = _message_class(_sub(f))()
            for inner in _sub(f).fields:
                thunk = self._domain(_sub(f), inner)
                if thunk is not None and not inner.is_repeated:
                    setattr(sub, inner.name, thunk()[0])
            getattr(msg, f.name).CopyFrom(sub)
            return
        elif f.type == T.TYPE_MESSAGE:
            getattr(msg, f.name).CopyFrom(self.message(_sub(f), where, depth + 1))
            return
        else:
            value, label = domain() if domain is not None else self.draw(self._scalar(f))
            setattr(msg, f.name, value)
        if label:
            self.tags.append(f"{where}:{label}")

    def _scalar(self, f: FieldDescriptor) -> Strategy:
        return _scalar_strategy(f.type, _enum_numbers(f) if f.type == T.TYPE_ENUM else ())

    def _generic_map(self, f: FieldDescriptor) -> tuple[dict[Any, Any], str | None]:
        key_field = _sub(f).fields_by_name["key"]
        value_field = _sub(f).fields_by_name["value"]
        result = {}
        labels = []
        if value_field.type == T.TYPE_MESSAGE:
            return {}, None
        for _ in range(self.draw(st.integers(0, 3))):
            key, klabel = self.draw(self._scalar(key_field))
            value, vlabel = self.draw(self._scalar(value_field))
            result[key] = value
            labels += [x for x in (klabel, vlabel) if x]
        return result, ",".join(labels) or None

    def _capability(self, where: str, depth: int) -> csi_pb2.VolumeCapability:
        if self.good:
            cap = csi_pb2.VolumeCapability()
            cap.mount.mount_flags.extend(self.draw(st.sampled_from(
                [[], ["noatime"], ["ro"], ["acl", "noatime"]])))
            cap.access_mode.mode = self.draw(st.sampled_from(GOOD_MODES))
            return cap
        if self.draw(st.integers(0, 9)) >= 7:  # a generic one: any field, any value
            return self.message(csi_pb2.VolumeCapability.DESCRIPTOR, where, depth + 1)  # type: ignore[return-value]
        cap = csi_pb2.VolumeCapability()
        kind = self.draw(st.integers(0, 9))
        if kind < 8:
            cap.mount.SetInParent()
            flags, label = v.many(self.draw, v.mount_flag(self.world), "mount_flags")
            cap.mount.mount_flags.extend(flags)
            fs_type, fs_label = self.draw(v.weighted((8, v.pool(["", "glusterfs"])),
                                                     (1, v.pool(["ext4"], "other-fs"))))
            cap.mount.fs_type = fs_type
            for what, text in (("mount_flags", label), ("fs_type", fs_label)):
                if text:
                    self.tags.append(f"{where}.mount.{what}:{text}")
        elif kind == 8:
            cap.block.SetInParent()
            self.tags.append(f"{where}:block-access")
        mode = self.draw(st.sampled_from(_access_modes()))
        cap.access_mode.mode = mode  # type: ignore[assignment]
        if mode in (0, 99):
            self.tags.append(f"{where}.access_mode:mode={mode}")
        return cap


@functools.cache
def _scalar_strategy(kind: int, enum_numbers: tuple[int, ...]) -> Strategy:
    """The generic strategy of a scalar field type (an enum also gets an unknown value)."""
    if kind == T.TYPE_STRING:
        return v.text()
    if kind == T.TYPE_BOOL:
        return v.tag(st.booleans(), None)
    if kind == T.TYPE_BYTES:
        return v.tag(st.binary(max_size=16), "bytes")
    if kind == T.TYPE_ENUM:
        return v.weighted((9, v.pool(list(enum_numbers))), (1, v.fixed(99, "unknown-enum")))
    if kind in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        return v.pool([0.0, -1.0, 1.5, float("inf"), float("nan"), 1e308], "float")
    low, high = _INT_RANGES[kind]
    edges = sorted({low, high, 0, 1, -1 if low < 0 else 2, 1 << 30})
    return v.weighted((3, v.pool(edges, "edge-int")), (7, v.tag(st.integers(low, high), None)))


def _sub(f: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert f.message_type is not None, f.full_name
    return f.message_type


def _enum_numbers(f: FieldDescriptor) -> tuple[int, ...]:
    assert f.enum_type is not None, f.full_name
    return tuple(x.number for x in f.enum_type.values)


def _is_map(f: FieldDescriptor) -> bool:
    return (f.type == T.TYPE_MESSAGE and f.is_repeated
            and _sub(f).GetOptions().map_entry)


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


@st.composite
def request(draw: st.DrawFn, world: World, rpc: Rpc) -> FuzzRequest:
    builder = Builder(world, draw, rpc)
    descriptor = csi_pb2.DESCRIPTOR.message_types_by_name[rpc.request_type.__name__]
    message = builder.message(descriptor, rpc.request_type.__name__)
    return FuzzRequest(rpc, message, builder.tags, builder.touched)
