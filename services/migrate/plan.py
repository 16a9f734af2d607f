"""What migrate would do: every in-tree glusterfs PV (and every move begun earlier), its
claim, its Heketi volume, the StorageClass it maps to, the pods using it, and a verdict.
Reading only; `apply` and `rollback` act on the units found here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from services.common import pv_annotations
from services.common.errors import NotFound
from services.controller.heketi import VolumeInfo
from services.controller.ids import Kind, parse_ref
from services.migrate import build, journal
from services.migrate.heketi import HeketiAccess, HeketiUnreachable, Target, Unmigratable
from services.migrate.intree import (
    claim_of,
    controller_of,
    glusterfs_source,
    heketi_ref,
    uses_claim,
)
from services.migrate.journal import Obj
from services.migrate.kube import Kube, KubeError, name


class Status(Enum):
    READY = "ready"  # can be migrated now
    IN_USE = "in use"  # can be migrated once the pods using it stop (apply waits)
    BLOCKED = "cannot migrate"  # the reasons say why
    IN_PROGRESS = "in progress"  # begun earlier: apply resumes it, rollback undoes it
    MIGRATED = "migrated"
    ERROR = "error"  # could not be examined (API or Heketi failure)


@dataclass(frozen=True)
class PodUse:
    name: str
    owner: str | None  # "StatefulSet/web"; None for a pod nothing re-creates

    def __str__(self) -> str:
        return f"{self.name} ({self.owner})" if self.owner else f"{self.name} (no owner)"


@dataclass
class Unit:
    """One claim and the PVs of its move."""

    namespace: str
    claim: str
    old_pv: Obj | None = None
    new_pv: Obj | None = None
    pvc: Obj | None = None
    status: Status = Status.READY
    reasons: list[str] = field(default_factory=list)
    pods: list[PodUse] = field(default_factory=list)
    info: VolumeInfo | None = None
    target: Target | None = None
    storage_class: Obj | None = None  # the class of this driver the claim moves to
    old_class: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.claim}"

    def block(self, reason: str) -> None:
        self.reasons.append(reason)
        if self.status is not Status.ERROR:
            self.status = Status.BLOCKED

    def as_json(self) -> dict[str, Any]:
        return {
            "claim": self.key, "status": self.status.value, "reasons": self.reasons,
            "pv": name(self.old_pv) if self.old_pv else None,
            "csiPv": name(self.new_pv) if self.new_pv else build.csi_pv_name(
                name(self.old_pv)) if self.old_pv else None,
            "heketiVolume": ({"id": self.info.id, "name": self.info.name}
                             if self.info else None),
            "storageClass": {"from": self.old_class,
                             "to": name(self.storage_class) if self.storage_class else None},
            "pods": [str(p) for p in self.pods],
            "volumeId": (self.target.volume_id(self.info.id)
                         if self.target and self.info else None),
        }


def _phase(obj: Obj | None) -> str:
    return str(((obj or {}).get("status") or {}).get("phase") or "")


def _is_ours(pv: Obj, driver: str) -> bool:
    csi = (pv.get("spec") or {}).get("csi") or {}
    if csi.get("driver") != driver:
        return False
    try:
        parse_ref(str(csi.get("volumeHandle") or ""), Kind.VOLUME)
    except NotFound:
        return False
    return True


class Planner:
    def __init__(self, kube: Kube, heketi: HeketiAccess, driver: str,
                 class_map: dict[str, str]) -> None:
        self.kube = kube
        self.heketi = heketi
        self.driver = driver
        self.class_map = class_map
        self.pvs: list[Obj] = []
        self._pods: dict[str, list[Obj]] = {}

    async def units(self) -> list[Unit]:
        """Every claim with an in-tree PV or a move begun by migrate, sorted by claim."""
        self.pvs = await self.kube.list_pvs()
        units: dict[tuple[str, str], Unit] = {}
        for pv in self.pvs:
            in_tree = glusterfs_source(pv) is not None
            journaled = _is_ours(pv, self.driver) and pv_annotations.FROM_PV in journal.notes_of(pv)
            if not in_tree and not journaled:
                continue
            claim = claim_of(pv) or ("", name(pv))
            unit = units.setdefault(claim, Unit(*claim))
            if journaled:
                unit.new_pv = pv
            elif unit.old_pv is None or _phase(pv) == "Bound":
                unit.old_pv = pv
        return [units[k] for k in sorted(units)]

    async def examine_all(self, units: list[Unit], parallel: int = 8) -> None:
        limit = asyncio.Semaphore(parallel)

        async def one(unit: Unit) -> None:
            async with limit:
                try:
                    await self.examine(unit)
                except KubeError as exc:
                    unit.status = Status.ERROR
                    unit.reasons.append(str(exc))

        await asyncio.gather(*(one(u) for u in units))

    async def examine(self, unit: Unit) -> None:
        unit.pods = await self.pods_using(unit.namespace, unit.claim) if unit.namespace else []
        if unit.new_pv is not None:
            state = journal.notes_of(unit.new_pv).get(pv_annotations.STATE, "")
            if journal.original_of(unit.new_pv) is None:
                unit.status = Status.ERROR
                unit.reasons.append(f"PV {name(unit.new_pv)} has no readable migrate journal")
            elif state == journal.DONE:
                unit.status = Status.MIGRATED
            else:
                unit.status = Status.IN_PROGRESS
                unit.reasons.append(f"{state or 'begun'}: run apply to finish, rollback to undo")
            return
        await self._examine_in_tree(unit)

    async def _examine_in_tree(self, unit: Unit) -> None:
        pv = unit.old_pv
        assert pv is not None
        spec = pv.get("spec") or {}
        if not unit.namespace:
            unit.block(f"PV {name(pv)} is {_phase(pv) or 'unbound'} and has no claim; "
                       "nothing to move (bind it to a claim first, or leave it)")
            return
        unit.pvc = await self.kube.pvc(unit.namespace, unit.claim)
        ref_uid = (spec.get("claimRef") or {}).get("uid")
        if unit.pvc is None:
            unit.block(f"claim {unit.key} does not exist (PV {name(pv)} is {_phase(pv)})")
        elif (unit.pvc.get("spec") or {}).get("volumeName") != name(pv) or \
                (ref_uid and ref_uid != (unit.pvc.get("metadata") or {}).get("uid")):
            unit.block(f"claim {unit.key} is not bound to PV {name(pv)}")
        if spec.get("volumeMode") == "Block":
            unit.block("raw block PVs are not supported")
        unit.old_class = str(spec.get("storageClassName") or journal.notes_of(pv).get(
            "volume.beta.kubernetes.io/storage-class") or "")
        await self._resolve_class(unit)
        if unit.storage_class is not None:
            await self._resolve_volume(unit)
            try:
                build.secret_refs(unit.storage_class, unit.namespace, unit.claim,
                                  build.csi_pv_name(name(pv)))
            except ValueError as exc:
                unit.block(str(exc))
        unowned = [p for p in unit.pods if p.owner is None]
        if unowned:
            unit.block("used by " + ", ".join(str(p) for p in unowned) + ": nothing re-creates "
                       "such a pod, so migrate waits for no one to scale it down; delete it "
                       "yourself (migrate never deletes pods), then run migrate again")
        if unit.status is Status.READY and unit.pods:
            unit.status = Status.IN_USE

    async def _resolve_class(self, unit: Unit) -> None:
        wanted = self.class_map.get(unit.old_class or "none", unit.old_class)
        if not wanted:
            unit.block("the PV has no StorageClass; pass --class-map none=<class of "
                       f"{self.driver}>")
            return
        found = await self.kube.storage_class(wanted)
        if found is None:
            unit.block(f"no StorageClass {wanted}: create one with provisioner {self.driver} "
                       f"(the in-tree parameters carry over), or pass --class-map "
                       f"{unit.old_class or 'none'}=<class>")
        elif found.get("provisioner") != self.driver:
            unit.block(f"StorageClass {wanted} belongs to {found.get('provisioner')}, not "
                       f"{self.driver}: re-create it with provisioner {self.driver} (bound PVs "
                       f"keep working), or pass --class-map {unit.old_class}=<class>")
        else:
            unit.storage_class = found

    async def _resolve_volume(self, unit: Unit) -> None:
        assert unit.old_pv is not None and unit.storage_class is not None
        ref = heketi_ref(unit.old_pv)
        if ref is None:
            unit.block("the PV's spec.glusterfs has no path (the Heketi volume name)")
            return
        try:
            unit.target = await self.heketi.target(unit.storage_class)
            unit.info = await self.heketi.volume(unit.target, ref)
        except HeketiUnreachable as exc:
            unit.status = Status.ERROR
            unit.reasons.append(str(exc))
        except Unmigratable as exc:
            unit.block(str(exc))

    async def pods_using(self, namespace: str, claim: str, fresh: bool = False) -> list[PodUse]:
        if fresh or namespace not in self._pods:
            self._pods[namespace] = await self.kube.pods(namespace)
        uses = []
        for pod in self._pods[namespace]:
            if uses_claim(pod, claim):
                uses.append(PodUse(name(pod), await self._owner(namespace, pod)))
        return sorted(uses, key=lambda p: p.name)

    async def _owner(self, namespace: str, pod: Obj) -> str | None:
        owner = controller_of(pod)
        if owner is None:
            return None
        kind, owner_name = owner
        if kind == "ReplicaSet":
            replica_set = await self.kube.replica_set(namespace, owner_name)
            above = controller_of(replica_set) if replica_set else None
            if above is not None:
                kind, owner_name = above
        return f"{kind}/{owner_name}"
