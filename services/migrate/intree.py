"""What the in-tree `kubernetes.io/glusterfs` provisioner left behind, and who uses it.

An in-tree PV has `spec.glusterfs: {endpoints, endpointsNamespace, path}`; `path` is the
Heketi volume's name (`vol_<id>`, or `<prefix>_<ns>_<pvc>_<uuid>` with volumenameprefix) and
the annotation `gluster.kubernetes.io/heketi-volume-id` its id. The provisioner made one
Endpoints and one Service per claim, `<customepnameprefix or glusterfs-dynamic>-<pvc uid>`
(older releases: `-<pvc name>`), labelled `gluster.kubernetes.io/provisioned-for-pvc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

HEKETI_VOLUME_ID = "gluster.kubernetes.io/heketi-volume-id"
GID_ANNOTATION = "pv.beta.kubernetes.io/gid"
PROVISIONED_FOR = "gluster.kubernetes.io/provisioned-for-pvc"
_DONE_PHASES = frozenset({"Succeeded", "Failed"})


def glusterfs_source(pv: Obj) -> Obj | None:
    source = (pv.get("spec") or {}).get("glusterfs")
    return source if isinstance(source, dict) else None


def claim_of(pv: Obj) -> tuple[str, str] | None:
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if ref.get("namespace") and ref.get("name"):
        return ref["namespace"], ref["name"]
    return None


@dataclass(frozen=True)
class HeketiRef:
    """How the PV names its Heketi volume: by id (annotation) and by name (path)."""

    volume_id: str | None
    volume_name: str


def heketi_ref(pv: Obj) -> HeketiRef | None:
    source = glusterfs_source(pv)
    if source is None or not source.get("path"):
        return None
    notes = (pv.get("metadata") or {}).get("annotations") or {}
    return HeketiRef(notes.get(HEKETI_VOLUME_ID) or None, str(source["path"]))


def endpoints_ref(pv: Obj, pvc_namespace: str) -> tuple[str, str] | None:
    """Namespace and name of the Endpoints (and Service) the PV mounts through."""
    source = glusterfs_source(pv)
    if source is None or not source.get("endpoints"):
        return None
    return source.get("endpointsNamespace") or pvc_namespace, str(source["endpoints"])


def per_claim(endpoints_name: str, labels: dict[str, str] | None, pvc_name: str,
              pvc_uid: str) -> bool:
    """Whether an Endpoints/Service was made for this one claim by the in-tree provisioner
    (only those are deleted; shared, hand-made Endpoints are left alone)."""
    if (labels or {}).get(PROVISIONED_FOR) == pvc_name:
        return True
    return (bool(pvc_uid) and endpoints_name.endswith("-" + pvc_uid)) or \
        endpoints_name == f"glusterfs-dynamic-{pvc_name}"


def uses_claim(pod: Obj, claim: str) -> bool:
    """A pod that is not finished and mounts the claim (finished pods hold nothing)."""
    if (pod.get("status") or {}).get("phase") in _DONE_PHASES:
        return False
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if ((volume.get("persistentVolumeClaim") or {}).get("claimName")) == claim:
            return True
    return False


def refers_to_claim(pod: Obj, claim: str) -> bool:
    """A pod of any phase that names the claim."""
    return any(((v.get("persistentVolumeClaim") or {}).get("claimName")) == claim
               for v in (pod.get("spec") or {}).get("volumes") or [])


def controller_of(obj: Obj) -> tuple[str, str] | None:
    """(kind, name) of the object's controlling owner."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None
