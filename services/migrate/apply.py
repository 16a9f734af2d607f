"""Moving one claim from its in-tree PV to a CSI PV of this driver, step by step.

A bound PV's volume source and a bound claim's spec cannot change, so the claim and the PV
are re-created:

1. the in-tree PV gets reclaim policy Retain (its original policy kept in an annotation):
   from here on nothing that follows can delete the Heketi volume;
2. wait until no pod uses the claim (migrate never deletes pods; it names them);
3. create the CSI PV (the adopted volume id, capacity, access modes, mount options, GID,
   the new class, reclaim Retain for now, pre-bound to the claim by name) carrying the
   journal: the original PV, claim, Endpoints and Service;
4. delete the claim (guarded by its uid), then the in-tree PV;
5. re-create the claim with its name, labels and annotations, bound to the CSI PV;
6. delete the claim's `glusterfs-dynamic-*` Endpoints and Service;
7. give the CSI PV the original reclaim policy; the journal says done.

Every step looks at the cluster first and does only what is missing, so running apply again
after a crash or Ctrl-C resumes where it stopped.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from services.common import pv_annotations
from services.migrate import build, journal
from services.migrate.intree import endpoints_ref, glusterfs_source, per_claim
from services.migrate.journal import Obj, Original
from services.migrate.kube import Kube, KubeError, name, uid
from services.migrate.plan import Planner, Status, Unit
from services.migrate.report import Outcome, Progress


@dataclass(frozen=True)
class Timeouts:
    pods: float = 300.0  # how long to wait for pods to stop using a claim
    step: float = 120.0  # how long one deletion or binding may take


def _spec(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


class Mover:
    """Shared by apply and rollback: waiting for pods, deleting, binding."""

    def __init__(self, kube: Kube, planner: Planner, progress: Progress,
                 timeouts: Timeouts) -> None:
        self.kube = kube
        self.planner = planner
        self.progress = progress
        self.timeouts = timeouts

    async def no_pods(self, unit: Unit) -> bool:
        """True once no pod uses the claim; False after the wait (the user was told which)."""
        pods = await self.planner.pods_using(unit.namespace, unit.claim, fresh=True)
        if not pods:
            return True
        self.progress.say(unit, "waiting for these pods to stop using the claim (scale their "
                          "owners down; migrate never deletes pods): "
                          + ", ".join(str(p) for p in pods))

        async def gone() -> bool:
            return not await self.planner.pods_using(unit.namespace, unit.claim, fresh=True)

        try:
            await self.kube.wait("pods to stop", gone, self.timeouts.pods)
        except KubeError:
            unit.pods = await self.planner.pods_using(unit.namespace, unit.claim, fresh=True)
            return False
        return True

    async def delete_claim(self, unit: Unit, pvc: Obj) -> None:
        self.progress.say(unit, f"deleting the claim (uid {uid(pvc)})")
        await self.kube.delete("PersistentVolumeClaim", unit.claim, unit.namespace, uid(pvc))
        await self.kube.wait(f"claim {unit.key} to be deleted",
                             lambda: self._gone(self.kube.pvc(unit.namespace, unit.claim),
                                                uid(pvc)), self.timeouts.step)

    async def delete_pv(self, unit: Unit, pv: Obj, what: str) -> None:
        self.progress.say(unit, f"deleting the {what} PV {name(pv)}")
        await self.kube.delete("PersistentVolume", name(pv), None, uid(pv))
        await self.kube.wait(f"PV {name(pv)} to be deleted",
                             lambda: self._gone(self.kube.pv(name(pv)), uid(pv)),
                             self.timeouts.step)

    @staticmethod
    async def _gone(read: Awaitable[Obj | None], old_uid: str) -> bool:
        current = await read
        return current is None or uid(current) != old_uid

    async def bound(self, unit: Unit, pv_name: str) -> None:
        async def ready() -> bool:
            pvc = await self.kube.pvc(unit.namespace, unit.claim)
            return bool(pvc and _spec(pvc).get("volumeName") == pv_name
                        and (pvc.get("status") or {}).get("phase") == "Bound")

        await self.kube.wait(f"claim {unit.key} to bind to PV {pv_name}", ready,
                             self.timeouts.step)


class Applier(Mover):
    async def run(self, unit: Unit) -> Outcome:
        if unit.status is Status.MIGRATED:
            return self.progress.done(unit, Outcome.SKIPPED, "already migrated")
        if unit.status is Status.ERROR:
            return self.progress.done(unit, Outcome.FAILED, "; ".join(unit.reasons))
        if unit.status is Status.BLOCKED:
            return self.progress.done(unit, Outcome.BLOCKED, "; ".join(unit.reasons))
        try:
            return await self._run(unit)
        except KubeError as exc:
            return self.progress.done(unit, Outcome.FAILED, str(exc))

    async def _run(self, unit: Unit) -> Outcome:
        # The claim is unusable from the moment its pods are gone until it is bound again.
        unusable_since = None
        if unit.new_pv is None:
            assert unit.old_pv is not None
            unit.old_pv = await self._retain(unit, unit.old_pv)
            if not await self.no_pods(unit):
                return self._waiting(unit)
            unusable_since = time.monotonic()
            unit.new_pv = await self._create_csi_pv(unit, unit.old_pv)
        else:
            state = journal.notes_of(unit.new_pv).get(pv_annotations.STATE)
            self.progress.say(unit, f"resuming the move begun earlier ({state})")
        original = journal.original_of(unit.new_pv)
        if original is None:
            return self.progress.done(unit, Outcome.FAILED, "the migrate journal is unreadable")
        new_name = name(unit.new_pv)

        pvc = await self.kube.pvc(unit.namespace, unit.claim)
        if pvc is not None and uid(pvc) == original.pvc_uid:
            if not await self.no_pods(unit):
                return self._waiting(unit)
            unusable_since = unusable_since or time.monotonic()
            await self.delete_claim(unit, pvc)
            pvc = None
        old = await self.kube.pv(original.pv["metadata"]["name"])
        if old is not None and glusterfs_source(old) is not None:
            await self._retain(unit, old)
            await self.delete_pv(unit, old, "in-tree")
        if pvc is None:
            self.progress.say(unit, f"re-creating the claim bound to PV {new_name}")
            await self.kube.create_pvc(build.claim_for(
                original, new_name, _spec(unit.new_pv)["storageClassName"],
                original.pv["metadata"]["name"]))
        elif _spec(pvc).get("volumeName") != new_name:
            return self.progress.done(unit, Outcome.FAILED, (
                f"a claim {unit.key} (uid {uid(pvc)}) that migrate did not make exists and is "
                f"not bound to PV {new_name}; delete it (check it holds no data first), then "
                "run apply again"))
        await self.bound(unit, new_name)
        downtime = "" if unusable_since is None else \
            f"; unusable for {time.monotonic() - unusable_since:.1f} s"
        await self._delete_endpoints(unit, original)
        await self._finish(unit, unit.new_pv)
        return self.progress.done(unit, Outcome.DONE, f"bound to PV {new_name}{downtime}")

    def _waiting(self, unit: Unit) -> Outcome:
        return self.progress.done(unit, Outcome.WAITING, "still used by " + ", ".join(
            str(p) for p in unit.pods) + "; scale them down and run apply again")

    async def _retain(self, unit: Unit, pv: Obj) -> Obj:
        """Retain, with the original policy saved first (in the same patch)."""
        policy = _spec(pv).get("persistentVolumeReclaimPolicy", "Delete")
        notes = journal.notes_of(pv)
        if pv_annotations.RECLAIM_POLICY in notes and policy == "Retain":
            return pv
        patch: Obj = {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
        if pv_annotations.RECLAIM_POLICY not in notes:
            patch["metadata"] = {"annotations": {pv_annotations.RECLAIM_POLICY: policy}}
        self.progress.say(unit, f"PV {name(pv)}: reclaim policy {policy} -> Retain")
        return await self.kube.patch_pv(name(pv), patch)

    async def _create_csi_pv(self, unit: Unit, old: Obj) -> Obj:
        assert unit.info is not None and unit.target is not None
        assert unit.storage_class is not None and unit.pvc is not None
        original_pv = journal.clean(old)
        assert original_pv is not None
        original_pv["spec"]["persistentVolumeReclaimPolicy"] = \
            journal.notes_of(old)[pv_annotations.RECLAIM_POLICY]
        endpoints, service = await self._per_claim_endpoints(unit, old, uid(unit.pvc))
        original = Original(pv=original_pv, pvc=journal.clean(unit.pvc) or {},
                            pvc_uid=uid(unit.pvc), endpoints=journal.clean(endpoints),
                            service=journal.clean(service))
        body = build.csi_pv(
            original=original, info=unit.info, volume_id=unit.target.volume_id(unit.info.id),
            driver=self.planner.driver, storage_class=name(unit.storage_class),
            refs=build.secret_refs(unit.storage_class, unit.namespace, unit.claim,
                                   build.csi_pv_name(name(old))))
        self.progress.say(unit, f"creating CSI PV {name(body)} for Heketi volume "
                          f"{unit.info.name}")
        return await self.kube.create_pv(body)

    async def _per_claim_endpoints(self, unit: Unit, pv: Obj,
                                   pvc_uid: str) -> tuple[Obj | None, Obj | None]:
        ref = endpoints_ref(pv, unit.namespace)
        if ref is None:
            return None, None
        shared = [p for p in self.planner.pvs if name(p) != name(pv)
                  and endpoints_ref(p, unit.namespace) == ref
                  and glusterfs_source(p) is not None]
        endpoints = await self.kube.endpoints(*ref)
        service = await self.kube.service(*ref)
        labels = ((endpoints or service or {}).get("metadata") or {}).get("labels")
        if shared or not per_claim(ref[1], labels, unit.claim, pvc_uid):
            return None, None  # not the claim's own: left alone
        return endpoints, service

    async def _delete_endpoints(self, unit: Unit, original: Original) -> None:
        for kind, recorded in (("Endpoints", original.endpoints), ("Service", original.service)):
            if recorded is None:
                continue
            meta = recorded["metadata"]
            read = self.kube.endpoints if kind == "Endpoints" else self.kube.service
            current = await read(meta["namespace"], meta["name"])
            if current is not None:
                self.progress.say(unit, f"deleting {kind} {meta['name']}")
                await self.kube.delete(kind, meta["name"], meta["namespace"], uid(current))

    async def _finish(self, unit: Unit, pv: Obj) -> None:
        notes = journal.notes_of(pv)
        policy = notes.get(pv_annotations.RECLAIM_POLICY, "Delete")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        unit.new_pv = await self.kube.patch_pv(name(pv), {
            "spec": {"persistentVolumeReclaimPolicy": policy},
            "metadata": {"annotations": {pv_annotations.STATE: journal.DONE,
                                         pv_annotations.MIGRATED_AT: now}}})
        unit.status = Status.MIGRATED


async def dry_run(kube: Kube, planner: Planner, progress: Progress, unit: Unit) -> Outcome:
    """Say what apply would do, and have the API server validate the CSI PV (dryRun=All)."""
    if unit.status in (Status.BLOCKED, Status.ERROR):
        outcome = Outcome.BLOCKED if unit.status is Status.BLOCKED else Outcome.FAILED
        return progress.done(unit, outcome, "; ".join(unit.reasons))
    if unit.status is Status.MIGRATED:
        return progress.done(unit, Outcome.SKIPPED, "already migrated")
    if unit.status is Status.IN_PROGRESS:
        return progress.done(unit, Outcome.SKIPPED, "would resume the move begun earlier")
    assert unit.old_pv is not None and unit.info is not None and unit.target is not None
    assert unit.storage_class is not None and unit.pvc is not None
    original = Original(pv=journal.clean(unit.old_pv) or {}, pvc=journal.clean(unit.pvc) or {},
                        pvc_uid=uid(unit.pvc))
    body = build.csi_pv(original=original, info=unit.info,
                        volume_id=unit.target.volume_id(unit.info.id), driver=planner.driver,
                        storage_class=name(unit.storage_class),
                        refs=build.secret_refs(unit.storage_class, unit.namespace, unit.claim,
                                               build.csi_pv_name(name(unit.old_pv))))
    try:
        await kube.create_pv(body, dry_run=True)
    except KubeError as exc:
        return progress.done(unit, Outcome.FAILED, f"the API server refuses the CSI PV: {exc}")
    wait = f"; first wait for {', '.join(str(p) for p in unit.pods)} to stop" \
        if unit.pods else ""
    return progress.done(unit, Outcome.SKIPPED, (
        f"would set PV {name(unit.old_pv)} to Retain{wait}, create CSI PV {name(body)} "
        f"({body['spec']['csi']['volumeHandle']}), re-create the claim bound to it and "
        "delete its in-tree Endpoints/Service (dry run: nothing changed)"))
