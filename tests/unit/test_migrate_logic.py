"""The pure parts of `heketi-csi migrate`: recognising in-tree objects, the objects it
builds, the journal, and the exit codes. (Against an API server:
tests/integration/test_migrate_apiserver.py.)"""

from __future__ import annotations

import pytest

from services.common import pv_annotations
from services.controller.heketi import Durability, GlusterMount, Snapshot, VolumeInfo
from services.migrate import build, journal
from services.migrate.intree import heketi_ref, per_claim, uses_claim
from services.migrate.journal import Original
from services.migrate.main import _class_map
from services.migrate.report import BLOCKED, FAILED, OK, WAITING, Outcome, exit_code

HID = "0123456789abcdef0123456789abcdef"
UID = "6b1f2c3d-0000-4000-8000-000000000001"


def in_tree_pv(**notes: str) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{UID}", "uid": "x", "resourceVersion": "9",
                         "labels": {"tier": "gold"},
                         "annotations": {"pv.beta.kubernetes.io/gid": "2001",
                                         "kubernetes.io/createdby": "heketi-dynamic-provisioner",
                                         "pv.kubernetes.io/bound-by-controller": "yes",
                                         "pv.kubernetes.io/provisioned-by":
                                             "kubernetes.io/glusterfs", **notes}},
            "spec": {"capacity": {"storage": "3Gi"}, "accessModes": ["ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gluster",
                     "mountOptions": ["log-level=ERROR"],
                     "glusterfs": {"endpoints": f"glusterfs-dynamic-{UID}", "path": f"vol_{HID}"},
                     "claimRef": {"namespace": "app", "name": "data", "uid": UID}},
            "status": {"phase": "Bound"}}


def claim() -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "app", "uid": UID,
                         "labels": {"app": "db"},
                         "annotations": {"owner": "team-a",
                                         "pv.kubernetes.io/bind-completed": "yes",
                                         "volume.beta.kubernetes.io/storage-provisioner":
                                             "kubernetes.io/glusterfs"}},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "gluster",
                     "volumeName": f"pvc-{UID}", "resources": {"requests": {"storage": "3Gi"}}},
            "status": {"phase": "Bound"}}


def info() -> VolumeInfo:
    return VolumeInfo(id=HID, name=f"vol_{HID}", cluster="c" * 32, size_gib=3,
                      durability=Durability.replicate(3), snapshot=Snapshot(True, 1.0), gid=2001,
                      mount=GlusterMount(hosts=("10.0.0.1",), device=f"10.0.0.1:vol_{HID}",
                                         options={"backup-volfile-servers":
                                                  "10.0.0.2,10.0.0.3"}))


def test_the_heketi_volume_comes_from_the_annotation_or_the_path() -> None:
    pv = in_tree_pv(**{"gluster.kubernetes.io/heketi-volume-id": HID})
    ref = heketi_ref(pv)
    assert ref is not None and (ref.volume_id, ref.volume_name) == (HID, f"vol_{HID}")
    ref = heketi_ref(in_tree_pv())
    assert ref is not None and ref.volume_id is None
    assert heketi_ref({"spec": {"csi": {}}}) is None


def test_only_the_claims_own_endpoints_are_deleted() -> None:
    assert per_claim(f"glusterfs-dynamic-{UID}", None, "data", UID)
    assert per_claim(f"custom-{UID}", None, "data", UID)  # customepnameprefix
    assert per_claim("glusterfs-dynamic-data", None, "data", UID)  # before the uid naming
    assert per_claim("anything", {"gluster.kubernetes.io/provisioned-for-pvc": "data"},
                     "data", UID)
    assert not per_claim("glusterfs-cluster", None, "data", UID)  # shared, hand-made


def test_finished_pods_do_not_hold_a_claim() -> None:
    pod = {"spec": {"volumes": [{"persistentVolumeClaim": {"claimName": "data"}}]},
           "status": {"phase": "Running"}}
    assert uses_claim(pod, "data") and not uses_claim(pod, "other")
    pod["status"]["phase"] = "Succeeded"
    assert not uses_claim(pod, "data")


def test_the_csi_pv_keeps_what_users_rely_on_and_carries_the_journal() -> None:
    original = Original(pv=journal.clean(in_tree_pv()) or {}, pvc=journal.clean(claim()) or {},
                        pvc_uid=UID)
    pv = build.csi_pv(original=original, info=info(), volume_id=f"ha1:default:{HID}:" + "a" * 20,
                      driver="glusterfs.heketi.csi.io", storage_class="gluster-csi",
                      refs={"controller-expand": {"name": "k", "namespace": "s"},
                            "provisioner": {"name": "k", "namespace": "s"}})
    notes = pv["metadata"]["annotations"]
    assert pv["metadata"]["name"] == f"pvc-{UID}-csi"
    assert pv["metadata"]["labels"] == {"tier": "gold"}
    assert notes["pv.beta.kubernetes.io/gid"] == "2001"
    assert notes["pv.kubernetes.io/provisioned-by"] == "glusterfs.heketi.csi.io"
    assert notes["volume.kubernetes.io/provisioner-deletion-secret-name"] == "k"
    assert "kubernetes.io/createdby" not in notes
    assert "pv.kubernetes.io/bound-by-controller" not in notes
    assert notes[pv_annotations.RECLAIM_POLICY] == "Delete"
    assert notes[pv_annotations.STATE] == journal.MIGRATING
    assert Original.decode(notes[pv_annotations.ORIGINAL]) == original
    spec = pv["spec"]
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"  # until the move is done
    assert spec["capacity"] == {"storage": "3Gi"} and spec["mountOptions"] == ["log-level=ERROR"]
    assert spec["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                "namespace": "app", "name": "data"}  # no uid: a new claim
    assert spec["csi"]["controllerExpandSecretRef"] == {"name": "k", "namespace": "s"}
    assert spec["csi"]["volumeAttributes"] == {
        "volume": f"vol_{HID}", "hosts": "10.0.0.1", "backupVolfileServers": "10.0.0.2,10.0.0.3",
        "gid": "2001"}


def test_the_new_claim_keeps_name_labels_annotations_without_binding_marks() -> None:
    original = Original(pv=journal.clean(in_tree_pv()) or {}, pvc=journal.clean(claim()) or {},
                        pvc_uid=UID)
    pvc = build.claim_for(original, "new-pv", "gluster-csi", f"pvc-{UID}")
    meta = pvc["metadata"]
    assert (meta["name"], meta["namespace"], meta["labels"]) == ("data", "app", {"app": "db"})
    assert meta["annotations"] == {"owner": "team-a", pv_annotations.FROM_PV: f"pvc-{UID}"}
    assert "uid" not in meta and "status" not in pvc
    assert pvc["spec"]["volumeName"] == "new-pv"
    assert pvc["spec"]["storageClassName"] == "gluster-csi"
    assert pvc["spec"]["resources"] == {"requests": {"storage": "3Gi"}}


def test_a_restored_pv_is_pre_bound_by_name_and_retained_until_done() -> None:
    original = Original(pv=journal.clean(in_tree_pv()) or {}, pvc=journal.clean(claim()) or {},
                        pvc_uid=UID)
    pv = build.restored_pv(original, "new-pv")
    assert pv["spec"]["glusterfs"]["path"] == f"vol_{HID}"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["metadata"]["annotations"][pv_annotations.RECLAIM_POLICY] == "Delete"
    assert "uid" not in pv["spec"]["claimRef"]


def test_secret_templates_are_filled_in_or_refused() -> None:
    storage_class = {"parameters": {
        "csi.storage.k8s.io/controller-publish-secret-name": "${pvc.name}-key",
        "csi.storage.k8s.io/controller-publish-secret-namespace": "${pvc.namespace}",
        "csi.storage.k8s.io/provisioner-secret-name": "heketi",
        "csi.storage.k8s.io/provisioner-secret-namespace": "storage"}}
    refs = build.secret_refs(storage_class, "app", "data", "pv-1")
    assert refs == {"controller-publish": {"name": "data-key", "namespace": "app"},
                    "provisioner": {"name": "heketi", "namespace": "storage"}}
    storage_class["parameters"]["csi.storage.k8s.io/provisioner-secret-name"] = \
        "${pvc.annotations['team/secret']}"
    with pytest.raises(ValueError, match="not supported"):
        build.secret_refs(storage_class, "app", "data", "pv-1")


def test_a_service_comes_back_without_its_old_cluster_ip() -> None:
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "s", "namespace": "n", "uid": "u"},
               "spec": {"clusterIP": "10.0.0.9", "clusterIPs": ["10.0.0.9"],
                        "ports": [{"port": 1}]}}
    assert build.restored(service) == {"apiVersion": "v1", "kind": "Service",
                                       "metadata": {"name": "s", "namespace": "n"},
                                       "spec": {"ports": [{"port": 1}]}}


def test_exit_codes_say_the_worst_outcome() -> None:
    assert exit_code([]) == OK
    assert exit_code([Outcome.DONE, Outcome.SKIPPED]) == OK
    assert exit_code([Outcome.DONE, Outcome.WAITING]) == WAITING
    assert exit_code([Outcome.WAITING, Outcome.BLOCKED]) == BLOCKED
    assert exit_code([Outcome.BLOCKED, Outcome.FAILED, Outcome.DONE]) == FAILED


def test_class_map() -> None:
    assert _class_map(["a=b", "none=c"]) == {"a": "b", "none": "c"}
    for bad in ("a", "=b", "a="):
        with pytest.raises(ValueError):
            _class_map([bad])


def test_an_unreadable_journal_is_none() -> None:
    unreadable = {"metadata": {"annotations": {pv_annotations.ORIGINAL: "{"}}}
    assert journal.original_of(unreadable) is None
    assert journal.original_of({"metadata": {}}) is None
