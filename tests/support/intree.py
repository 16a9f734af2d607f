"""In-tree GlusterFS objects as the removed `kubernetes.io/glusterfs` provisioner left them,
for the migrate tests: a Heketi volume named as in-tree named them, a PV with
`spec.glusterfs`, the per-claim Endpoints and Service, and the claim bound to the PV.
The API server still accepts all of it, even where no plugin can mount it any more."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from services.controller.heketi import (
    Durability,
    HeketiClient,
    Snapshot,
    VolumeCreateRequest,
    VolumeInfo,
)
from tests.support.conditions import first

DRIVER = "glusterfs.heketi.csi.io"
IN_TREE_CLASS = "glusterfs-intree"


@dataclass(frozen=True)
class InTree:
    namespace: str
    claim: str
    pv: str
    pvc_uid: str
    endpoints: str
    volume: VolumeInfo


async def heketi_volume(heketi: HeketiClient, *, gid: int, size_gib: int = 1,
                        prefix: str | None = None, namespace: str = "", claim: str = "",
                        durability: Durability | None = None) -> VolumeInfo:
    """`vol_<id>` (no name: Heketi names it), or `<prefix>_<ns>_<claim>_<uuid>`; the
    in-tree plugin always enabled gluster snapshots."""
    name = f"{prefix}_{namespace}_{claim}_{uuid.uuid4().hex[:8]}" if prefix else None
    return await heketi.create_volume(VolumeCreateRequest(
        size_gib=size_gib, name=name, durability=durability or Durability(), gid=gid,
        snapshot=Snapshot(enable=True, factor=1.0)))


async def wait_bound(core: Any, namespace: str, claim: str, timeout: float = 60) -> Any:
    """The claim, once it is bound."""
    async def bound() -> Any:
        pvc = await core.read_namespaced_persistent_volume_claim(claim, namespace)
        return pvc if pvc.status.phase == "Bound" else None

    return await first(bound, f"claim {namespace}/{claim} bound", timeout, 0.2)


async def make_in_tree_claim(core: Any, heketi: HeketiClient, namespace: str, claim: str, *,
                             gid: int, hosts: list[str], storage_class: str = IN_TREE_CLASS,
                             prefix: str | None = None, annotate_id: bool = True,
                             reclaim: str = "Delete", volume: VolumeInfo | None = None,
                             labels: dict[str, str] | None = None) -> InTree:
    info = volume or await heketi_volume(heketi, gid=gid, prefix=prefix, namespace=namespace,
                                         claim=claim)
    pvc_body = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace, "labels": labels or {"app": claim},
                     "annotations": {"team": "storage",
                                     "volume.beta.kubernetes.io/storage-provisioner":
                                         "kubernetes.io/glusterfs"}},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                 "resources": {"requests": {"storage": f"{info.size_gib}Gi"}}},
    }
    pvc = await core.create_namespaced_persistent_volume_claim(namespace, pvc_body)
    pvc_uid = pvc.metadata.uid
    pv_name = f"pvc-{pvc_uid}"
    endpoints = f"glusterfs-dynamic-{pvc_uid}"
    ep_labels = {"gluster.kubernetes.io/provisioned-for-pvc": claim}
    await core.create_namespaced_endpoints(namespace, {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": endpoints, "namespace": namespace, "labels": ep_labels},
        "subsets": [{"addresses": [{"ip": h} for h in hosts], "ports": [{"port": 1}]}]})
    await core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": endpoints, "namespace": namespace, "labels": ep_labels},
        "spec": {"ports": [{"port": 1, "protocol": "TCP", "targetPort": 1}]}})
    notes = {"pv.beta.kubernetes.io/gid": str(gid),
             "kubernetes.io/createdby": "heketi-dynamic-provisioner",
             "gluster.org/type": "file",
             "Description": "Gluster-Internal: Dynamically provisioned PV",
             "pv.kubernetes.io/provisioned-by": "kubernetes.io/glusterfs"}
    if annotate_id:
        notes["gluster.kubernetes.io/heketi-volume-id"] = info.id
    await core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "annotations": notes},
        "spec": {
            "capacity": {"storage": f"{info.size_gib}Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": storage_class,
            "mountOptions": ["log-level=ERROR"],
            "glusterfs": {"endpoints": endpoints, "endpointsNamespace": namespace,
                          "path": info.name},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": namespace, "name": claim, "uid": pvc_uid},
        },
    })
    await core.patch_namespaced_persistent_volume_claim(claim, namespace,
                                                        {"spec": {"volumeName": pv_name}})
    await wait_bound(core, namespace, claim)
    return InTree(namespace, claim, pv_name, pvc_uid, endpoints, info)


def csi_class(name: str, **parameters: str) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": DRIVER, "reclaimPolicy": "Delete",
            "allowVolumeExpansion": True, "parameters": parameters}


async def ensure_class(storage: Any, body: dict[str, Any]) -> None:
    try:
        await storage.create_storage_class(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
