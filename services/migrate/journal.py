"""What migrate writes on the objects it changes, so that any step can be resumed or undone.

On the in-tree PV (before anything else): its original reclaim policy, then Retain.
On the CSI PV it creates (before anything is deleted): the original PV, PVC, Endpoints and
Service as they were, and the state of the migration. The CSI PV is therefore the journal:
while it exists, everything needed to finish or undo the move is in the cluster.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from services.common.pv_annotations import ORIGINAL, PREFIX

Obj = dict[str, Any]

MIGRATING, DONE, ROLLING_BACK = "migrating", "done", "rolling-back"

# Annotations the binder or the old provisioner wrote; a re-created object must not carry them.
_BINDING_ANNOTATIONS = frozenset({
    "pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
    "pv.kubernetes.io/provisioned-by", "pv.kubernetes.io/migrated-to",
    "volume.beta.kubernetes.io/storage-provisioner", "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
})


def notes_of(obj: Obj | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def _meta(obj: Obj, keep_binding: bool) -> Obj:
    meta = obj.get("metadata") or {}
    kept: Obj = {"name": meta["name"]}
    if meta.get("namespace"):
        kept["namespace"] = meta["namespace"]
    if meta.get("labels"):
        kept["labels"] = dict(meta["labels"])
    notes = {k: v for k, v in (meta.get("annotations") or {}).items()
             if not k.startswith(PREFIX) and (keep_binding or k not in _BINDING_ANNOTATIONS)}
    if notes:
        kept["annotations"] = notes
    return kept


def clean(obj: Obj | None, *, keep_binding: bool = True) -> Obj | None:
    """The object as a user would write it: name, namespace, labels, annotations and its
    spec (or Endpoints' subsets); no uid, status, resourceVersion or managed fields."""
    if obj is None:
        return None
    kept: Obj = {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj["kind"],
                 "metadata": _meta(obj, keep_binding)}
    if "spec" in obj:
        kept["spec"] = copy.deepcopy(obj["spec"])
    if "subsets" in obj:
        kept["subsets"] = copy.deepcopy(obj["subsets"])
    return kept


@dataclass(frozen=True)
class Original:
    """The objects as they were before `apply` (cleaned), and their uids."""

    pv: Obj
    pvc: Obj
    pvc_uid: str
    endpoints: Obj | None = None
    service: Obj | None = None

    def encode(self) -> str:
        return json.dumps({"pv": self.pv, "pvc": self.pvc, "pvcUid": self.pvc_uid,
                           "endpoints": self.endpoints, "service": self.service},
                          separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Original:
        data = json.loads(text)
        return cls(pv=data["pv"], pvc=data["pvc"], pvc_uid=data["pvcUid"],
                   endpoints=data.get("endpoints"), service=data.get("service"))


def original_of(csi_pv: Obj) -> Original | None:
    text = notes_of(csi_pv).get(ORIGINAL)
    if not text:
        return None
    try:
        return Original.decode(text)
    except (ValueError, KeyError, TypeError):
        return None
