"""Our volumes and snapshots in Heketi, as the controller RPCs find, create and delete them.

Every lookup asks Heketi (one GET, `Backend.reread`) and keeps the backend's name index in
step with the answer, so that an object deleted outside the driver is forgotten and the next
create of its name makes it again. Volume RPCs (`service.py`) and snapshot RPCs
(`snapshots.py`) share these, and the keys their operations hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Hashable, Mapping

from services.common.errors import Aborted, FailedPrecondition, NotFound, Unavailable
from services.common.keyed_operations import KeyedOperations
from services.common.logging import get_logger
from services.common.rpc import RpcContext
from services.controller.backends import Backend, BackendRegistry
from services.controller.heketi import (
    HeketiNameInUse,
    HeketiNotFound,
    HeketiResultLost,
    OnProgress,
    VolumeInfo,
)
from services.controller.ids import Kind, ObjectRef, mark_matches, parse_ref
from services.controller.index import Entry

_log = get_logger("controller")


def noun(kind: Kind) -> str:
    return "volume" if kind is Kind.VOLUME else "snapshot"


def name_key(token: str, kind: Kind, hashed: str) -> Hashable:
    """The key of an operation that creates the object of this CSI name (hash)."""
    return (token, f"{noun(kind)}-name", hashed)


def id_key(ref: ObjectRef) -> Hashable:
    """The key of an operation on an existing volume or snapshot."""
    return (ref.backend, "id", ref.heketi_id)


async def find_by_name(backend: Backend, kind: Kind, hashed: str) -> Entry | None:
    """The object whose CSI name has this hash, confirmed with Heketi; None when the index
    knows none, or Heketi no longer has it (deleted outside the driver)."""
    entry = backend.index.by_hash(kind, hashed)
    if entry is None:
        return None
    await backend.reread(entry.heketi_id)
    return backend.index.by_id(entry.heketi_id)


def adopted_entry(info: VolumeInfo) -> Entry:
    """A volume adopted by `heketi-csi migrate`: not named by us, so never in the name index."""
    return Entry(Kind.VOLUME, "", info)


async def live_entry(backend: Backend, ref: ObjectRef) -> Entry:
    """Our (or an adopted) volume or snapshot `ref` as Heketi describes it now; NOT_FOUND
    otherwise."""
    info = await backend.reread(ref.heketi_id)
    entry = backend.index.by_id(ref.heketi_id)
    if entry is None and ref.adopted and info is not None:
        entry = adopted_entry(info)
    if entry is None or entry.kind is not ref.kind:
        raise NotFound(f"{noun(ref.kind)} {ref.encode()} does not exist")
    return entry


def require_cloneable(entry: Entry) -> None:
    if not entry.info.snapshot.enable:
        raise FailedPrecondition(
            f"Heketi volume {entry.info.name} was created without gluster snapshots "
            "enabled, so Heketi cannot clone it")


async def create_recovering(
    backend: Backend, kind: Kind, hashed: str, call: Callable[[], Awaitable[VolumeInfo]],
) -> Entry:
    """Run a Heketi create or clone; on a lost result or a name clash, find the object by
    its name instead of making another."""
    try:
        info = await call()
    except (HeketiResultLost, HeketiNameInUse) as exc:
        if isinstance(exc, HeketiResultLost):
            _log.warning("Heketi result lost; looking the volume up by name",
                         backend=backend.token, op_id=exc.op_id)
        found = await backend.index.scan_new(backend.client)
        _log.info("recovery scan", backend=backend.token, new_volumes=found)
        entry = backend.index.by_hash(kind, hashed)
        if entry is not None:
            return entry
        if isinstance(exc, HeketiResultLost):
            raise Unavailable(
                "the result of the Heketi operation was lost and the volume was not found "
                "by name; retry") from None
        raise Aborted(
            "Heketi reports the volume name in use but does not list the volume yet "
            "(an earlier create is still running in Heketi, or Heketi stopped during it and "
            "holds it as a stale operation until its background cleaner rolls it back); "
            "retry later") from None
    entry = backend.index.add(info)
    assert entry is not None, "a volume created under our name must parse as ours"
    return entry


async def clone_recovering(
    backend: Backend, kind: Kind, hashed: str, ref: ObjectRef, src: Entry, name: str,
    on_progress: OnProgress,
) -> Entry:
    """Clone `src` (the live entry of `ref`) into a volume named `name`, as `create_recovering`
    runs a create. When Heketi answers the clone with 404, the source became hidden or was
    deleted since it was read: it is looked up again, so that the answer is ABORTED while an
    operation holds it and NOT_FOUND only once it is gone."""
    try:
        return await create_recovering(
            backend, kind, hashed,
            lambda: backend.client.clone_volume(src.heketi_id, name, on_progress=on_progress))
    except HeketiNotFound:
        # Gone: live_entry raises NOT_FOUND. Hidden: it raises ABORTED. There again (the
        # operation that hid it ended meanwhile): the source exists, so retry, not NOT_FOUND.
        await live_entry(backend, ref)
        raise Aborted(f"the source {noun(ref.kind)} {ref.encode()} was busy in Heketi when "
                      "the clone was asked for; retry") from None


async def delete_by_id(
    backends: BackendRegistry, ops: KeyedOperations, object_id: str, kind: Kind,
    secrets: Mapping[str, str], ctx: RpcContext,
) -> None:
    """Delete our volume or snapshot of this id; done when it is gone or not an id of ours,
    FAILED_PRECONDITION when Heketi's volume of that id is not ours."""
    try:
        ref = parse_ref(object_id, kind)
    except NotFound:
        ctx.log.info(f"not a heketi-csi {noun(kind)} id; nothing to delete")
        return
    backend = await backends.backend(ref.backend, secrets)

    async def delete() -> None:
        info = await backend.reread(ref.heketi_id)
        if info is None:
            ctx.log.info("already gone")
            return
        entry = backend.index.by_id(ref.heketi_id)
        if entry is None and ref.adopted:
            if not mark_matches(ref, backend.key):
                raise FailedPrecondition(
                    f"the adoption mark of {object_id} does not match this Heketi's key (was "
                    f"the key changed since `heketi-csi migrate apply`?); refusing to delete "
                    f"Heketi volume {info.name} ({info.id})")
        elif entry is None or entry.kind is not ref.kind:
            raise FailedPrecondition(
                f"Heketi volume {info.name} ({info.id}) was not created by heketi-csi as a "
                f"{noun(ref.kind)}; refusing to delete it")
        with contextlib.suppress(HeketiNotFound):
            await backend.client.delete_volume(ref.heketi_id)
        backend.index.remove(ref.heketi_id)
        ctx.log.info("deleted", heketi_id=ref.heketi_id)

    await ops.run(id_key(ref), what=f"deleting {noun(kind)} {object_id}", work=delete)
