"""Undoing `apply` for a claim: the in-tree PV, claim, Endpoints and Service come back from
the journal on the CSI PV, which is deleted last (with reclaim Retain: Heketi is untouched).

A finished move is undone only if the claim has not been used since (the controller marks
the CSI PV when a pod is attached to it; no pod that names the claim was created after the
move; the volume was not expanded), unless `--force`: a
rolled-back claim is served by the in-tree plugin again, which exists only in Kubernetes
before 1.26. A move that stopped half-way is always undone. Resumable like apply.
"""

from __future__ import annotations

import datetime

from services.common import pv_annotations
from services.migrate import build, journal
from services.migrate.apply import Mover
from services.migrate.intree import refers_to_claim
from services.migrate.journal import Obj, Original
from services.migrate.kube import KubeError, name, uid
from services.migrate.plan import Status, Unit
from services.migrate.report import Outcome


def _spec(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


def _time(value: object) -> datetime.datetime:
    """An API timestamp (`...Z` or `...+00:00`); the epoch when there is none."""
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.datetime.fromtimestamp(0, datetime.UTC)


class RollBacker(Mover):
    async def run(self, unit: Unit, force: bool = False) -> Outcome:
        try:
            if unit.new_pv is None:
                return await self._restore_policy_only(unit)
            return await self._run(unit, force)
        except KubeError as exc:
            return self.progress.done(unit, Outcome.FAILED, str(exc))

    async def _restore_policy_only(self, unit: Unit) -> Outcome:
        """No CSI PV: at most the in-tree PV was set to Retain (or a rollback stopped at its
        last step). Put its reclaim policy back."""
        old = unit.old_pv
        if old is None or pv_annotations.RECLAIM_POLICY not in journal.notes_of(old):
            return self.progress.done(unit, Outcome.SKIPPED, "not migrated; nothing to undo")
        await self._restore_in_tree_policy(unit, old)
        return self.progress.done(unit, Outcome.DONE, f"PV {name(old)} as it was")

    async def _run(self, unit: Unit, force: bool) -> Outcome:
        csi_pv = unit.new_pv
        assert csi_pv is not None
        original = journal.original_of(csi_pv)
        if original is None:
            return self.progress.done(unit, Outcome.FAILED, "the migrate journal is unreadable")
        notes = journal.notes_of(csi_pv)
        if notes.get(pv_annotations.STATE) == journal.DONE and not force:
            why = await self._used_since(unit, csi_pv, original)
            if why:
                return self.progress.done(unit, Outcome.BLOCKED,
                                          f"{why}; rollback refused (--force overrides)")
        if notes.get(pv_annotations.STATE) != journal.ROLLING_BACK or \
                _spec(csi_pv).get("persistentVolumeReclaimPolicy") != "Retain":
            self.progress.say(unit, f"PV {name(csi_pv)}: reclaim policy -> Retain")
            csi_pv = await self.kube.patch_pv(name(csi_pv), {
                "spec": {"persistentVolumeReclaimPolicy": "Retain"},
                "metadata": {"annotations": {pv_annotations.STATE: journal.ROLLING_BACK}}})
        old_name = original.pv["metadata"]["name"]

        pvc = await self.kube.pvc(unit.namespace, unit.claim)
        if pvc is not None and _spec(pvc).get("volumeName") == name(csi_pv):
            if not await self.no_pods(unit):
                return self.progress.done(unit, Outcome.WAITING, "still used by " + ", ".join(
                    str(p) for p in unit.pods) + "; scale them down and run rollback again")
            await self.delete_claim(unit, pvc)
            pvc = None
        elif pvc is not None and uid(pvc) != original.pvc_uid:
            return self.progress.done(unit, Outcome.FAILED, (
                f"claim {unit.key} (uid {uid(pvc)}) is bound to neither PV; leave it to "
                "its owner"))
        old = await self.kube.pv(old_name)
        if old is not None and (old.get("metadata") or {}).get("deletionTimestamp"):
            await self.kube.wait(f"PV {old_name} to be deleted",
                                 lambda: self._gone(self.kube.pv(old_name), uid(old or {})),
                                 self.timeouts.step)
            old = None
        if old is None:
            self.progress.say(unit, f"re-creating the in-tree PV {old_name}")
            old = await self.kube.create_pv(build.restored_pv(original, name(csi_pv)))
        elif (_spec(old).get("claimRef") or {}).get("uid") and pvc is None:
            # Released by the claim apply deleted: let the re-created claim bind it again.
            old = await self.kube.patch_pv(old_name, {
                "spec": {"claimRef": {"uid": None, "resourceVersion": None}}})
        for recorded in (original.endpoints, original.service):
            await self._recreate(unit, recorded)
        if pvc is None:
            self.progress.say(unit, f"re-creating the claim bound to PV {old_name}")
            claim = journal.clean(original.pvc, keep_binding=False)
            assert claim is not None
            await self.kube.create_pvc(claim)
        await self.bound(unit, old_name)
        await self.delete_pv(unit, csi_pv, "CSI")
        await self._restore_in_tree_policy(unit, old)
        unit.status = Status.READY
        return self.progress.done(unit, Outcome.DONE, f"bound to the in-tree PV {old_name}")

    async def _used_since(self, unit: Unit, csi_pv: Obj, original: Original) -> str | None:
        used = journal.notes_of(csi_pv).get(pv_annotations.USED_AT)
        if used:
            return f"a pod used the claim since the move (attached at {used})"
        capacity = (_spec(csi_pv).get("capacity") or {}).get("storage")
        was = (original.pv["spec"].get("capacity") or {}).get("storage")
        if capacity != was:
            return f"the volume was resized since the move ({was} -> {capacity})"
        since = _time(journal.notes_of(csi_pv).get(pv_annotations.MIGRATED_AT))
        users = [name(p) for p in await self.kube.pods(unit.namespace)
                 if refers_to_claim(p, unit.claim)
                 and _time((p.get("metadata") or {}).get("creationTimestamp")) >= since]
        if users:
            return "used since the move by pod " + ", ".join(sorted(users))
        return None

    async def _recreate(self, unit: Unit, recorded: Obj | None) -> None:
        body = build.restored(recorded)
        if body is None:
            return
        meta = body["metadata"]
        read = self.kube.endpoints if body["kind"] == "Endpoints" else self.kube.service
        if await read(meta["namespace"], meta["name"]) is None:
            self.progress.say(unit, f"re-creating {body['kind']} {meta['name']}")
            create = self.kube.create_endpoints if body["kind"] == "Endpoints" else \
                self.kube.create_service
            await create(body)

    async def _restore_in_tree_policy(self, unit: Unit, pv: Obj) -> None:
        notes = journal.notes_of(pv)
        policy = notes.get(pv_annotations.RECLAIM_POLICY, "Delete")
        self.progress.say(unit, f"PV {name(pv)}: reclaim policy -> {policy}")
        await self.kube.patch_pv(name(pv), {
            "spec": {"persistentVolumeReclaimPolicy": policy},
            "metadata": {"annotations": {pv_annotations.RECLAIM_POLICY: None,
                                         pv_annotations.ROLLED_BACK_FROM: None}}})
