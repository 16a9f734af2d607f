"""The objects migrate creates: the CSI PV for an adopted Heketi volume, the claim bound to
it, and (rollback) the in-tree objects as they were."""

from __future__ import annotations

import copy
import re
from typing import Any

from services.common import pv_annotations
from services.controller.heketi import VolumeInfo
from services.controller.service import volume_context
from services.migrate import journal
from services.migrate.intree import GID_ANNOTATION, HEKETI_VOLUME_ID
from services.migrate.journal import Obj, Original

_SIDECAR = "csi.storage.k8s.io/"
# StorageClass secret parameters -> the PV's spec.csi field the sidecars and kubelet read.
_SECRET_REFS = {
    "controller-publish": "controllerPublishSecretRef",
    "controller-expand": "controllerExpandSecretRef",
    "node-stage": "nodeStageSecretRef",
    "node-publish": "nodePublishSecretRef",
    "node-expand": "nodeExpandSecretRef",
}
_DELETION_SECRET = "volume.kubernetes.io/provisioner-deletion-secret-"
_TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_MAX_NAME = 253


def csi_pv_name(old_pv_name: str) -> str:
    return old_pv_name[:_MAX_NAME - 4] + "-csi"


def _resolve(template: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        if key not in values:
            raise ValueError(f"secret template ${{{key}}} is not supported by migrate")
        return values[key]

    return _TEMPLATE.sub(one, template)


def secret_refs(storage_class: Obj, pvc_namespace: str, pvc_name: str,
                pv_name: str) -> dict[str, dict[str, str]]:
    """Secret references as external-provisioner would put them into the PV (name ->
    {name, namespace}); `provisioner` is the one used to delete the volume.
    ValueError for a template migrate cannot fill in."""
    params = {k.lower(): v for k, v in (storage_class.get("parameters") or {}).items()}
    values = {"pvc.namespace": pvc_namespace, "pvc.name": pvc_name, "pv.name": pv_name}
    refs: dict[str, dict[str, str]] = {}
    for prefix in (*_SECRET_REFS, "provisioner"):
        name = params.get(f"{_SIDECAR}{prefix}-secret-name")
        namespace = params.get(f"{_SIDECAR}{prefix}-secret-namespace")
        if name and namespace:
            refs[prefix] = {"name": _resolve(name, values),
                            "namespace": _resolve(namespace, values)}
    return refs


def csi_pv(*, original: Original, info: VolumeInfo, volume_id: str, driver: str,
           storage_class: str, refs: dict[str, dict[str, str]]) -> Obj:
    """The CSI PV for the adopted volume: same capacity, access modes, mount options, GID
    and labels, the new class, pre-bound to the claim by name (the re-created claim will
    have a new uid), reclaim Retain until the move is done, and the journal."""
    old_spec = original.pv["spec"]
    old_notes = journal.notes_of(original.pv)
    pvc_meta = original.pvc["metadata"]
    notes = {k: v for k, v in old_notes.items()
             if k in (HEKETI_VOLUME_ID, GID_ANNOTATION) or not _in_tree_only(k)}
    notes["pv.kubernetes.io/provisioned-by"] = driver
    if GID_ANNOTATION not in notes and info.gid:
        notes[GID_ANNOTATION] = str(info.gid)
    notes[HEKETI_VOLUME_ID] = info.id
    if "provisioner" in refs:
        notes[_DELETION_SECRET + "name"] = refs["provisioner"]["name"]
        notes[_DELETION_SECRET + "namespace"] = refs["provisioner"]["namespace"]
    notes[pv_annotations.FROM_PV] = original.pv["metadata"]["name"]
    notes[pv_annotations.RECLAIM_POLICY] = old_spec.get("persistentVolumeReclaimPolicy", "Delete")
    notes[pv_annotations.ORIGINAL] = original.encode()
    notes[pv_annotations.STATE] = journal.MIGRATING
    csi: Obj = {"driver": driver, "volumeHandle": volume_id,
                "volumeAttributes": volume_context(info)}
    for prefix, field in _SECRET_REFS.items():
        if prefix in refs:
            csi[field] = refs[prefix]
    spec: Obj = {
        "capacity": copy.deepcopy(old_spec["capacity"]),
        "accessModes": list(old_spec.get("accessModes") or ["ReadWriteMany"]),
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": storage_class,
        "volumeMode": old_spec.get("volumeMode") or "Filesystem",
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "namespace": pvc_meta["namespace"], "name": pvc_meta["name"]},
        "csi": csi,
    }
    if old_spec.get("mountOptions"):
        spec["mountOptions"] = list(old_spec["mountOptions"])
    metadata: Obj = {"name": csi_pv_name(original.pv["metadata"]["name"]), "annotations": notes}
    if original.pv["metadata"].get("labels"):
        metadata["labels"] = dict(original.pv["metadata"]["labels"])
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": metadata, "spec": spec}


def _in_tree_only(key: str) -> bool:
    """Annotations the in-tree provisioner or the binder wrote, which a CSI PV must not keep."""
    return key in ("kubernetes.io/createdby", "Description", "gluster.org/type") or \
        key.startswith(pv_annotations.PREFIX) or key in ("pv.kubernetes.io/bound-by-controller",
                                                  "pv.kubernetes.io/provisioned-by")


def claim_for(original: Original, pv_name: str, storage_class: str, from_pv: str) -> Obj:
    """The claim re-created with its name, labels and annotations, bound to `pv_name`."""
    pvc = journal.clean(original.pvc, keep_binding=False)
    assert pvc is not None
    notes = dict(pvc["metadata"].get("annotations") or {})
    notes.pop("volume.beta.kubernetes.io/storage-class", None)
    if from_pv:
        notes[pv_annotations.FROM_PV] = from_pv
    pvc["metadata"]["annotations"] = notes
    spec = pvc["spec"]
    spec["storageClassName"] = storage_class
    spec["volumeName"] = pv_name
    spec.pop("dataSource", None)
    spec.pop("dataSourceRef", None)
    return pvc


def restored_pv(original: Original, csi_pv_name: str) -> Obj:
    """The in-tree PV as it was (reclaim Retain until the rollback is done), pre-bound to
    the claim by name."""
    pv = journal.clean(original.pv)
    assert pv is not None
    spec = pv["spec"]
    notes = dict(pv["metadata"].get("annotations") or {})
    notes[pv_annotations.RECLAIM_POLICY] = spec.get("persistentVolumeReclaimPolicy", "Delete")
    notes[pv_annotations.ROLLED_BACK_FROM] = csi_pv_name
    pv["metadata"]["annotations"] = notes
    spec["persistentVolumeReclaimPolicy"] = "Retain"
    ref = spec.get("claimRef") or {}
    spec["claimRef"] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "namespace": ref.get("namespace"), "name": ref.get("name")}
    return pv


def restored(obj: Obj | None) -> Obj | None:
    """An Endpoints or Service as it was; a Service's cluster IPs are the API's to choose."""
    made = journal.clean(obj)
    if made is not None and made["kind"] == "Service":
        spec: dict[str, Any] = made.get("spec") or {}
        for field in ("clusterIP", "clusterIPs"):
            spec.pop(field, None)
    return made
