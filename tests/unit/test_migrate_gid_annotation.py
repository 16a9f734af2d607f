"""Which PVs the controller gives `pv.beta.kubernetes.io/gid`, and the patch it sends.

(The annotator against a real API server: tests/e2e/test_gid.py.)"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from services.controller.ids import Kind, adoption_mark, make_ref
from services.controller.pv_annotator import GID_ANNOTATION, annotation_patch, wanted_gid

DRIVER = "glusterfs.heketi.csi.io"
HID = "0123456789abcdef0123456789abcdef"
OURS = make_ref(Kind.VOLUME, "default", HID).encode()


def pv(handle: str = OURS, gid: str | None = "40001", driver: str = DRIVER,
       annotations: dict[str, str] | None = None) -> Any:
    attributes = {"volume": "vol_x", "hosts": "10.0.0.1"}
    if gid is not None:
        attributes["gid"] = gid
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name="pvc-1", annotations=annotations,
                                     resource_version="42"),
        spec=client.V1PersistentVolumeSpec(csi=client.V1CSIPersistentVolumeSource(
            driver=driver, volume_handle=handle, volume_attributes=attributes)))


def test_a_pv_of_ours_with_a_gid_gets_the_annotation_guarded_by_its_version() -> None:
    assert annotation_patch(pv(), DRIVER) == {
        "metadata": {"annotations": {GID_ANNOTATION: "40001"}, "resourceVersion": "42"}}


def test_adopted_volumes_are_ours_too() -> None:
    adopted = make_ref(Kind.VOLUME, "default", HID, adoption_mark("k", HID)).encode()
    assert wanted_gid(pv(handle=adopted), DRIVER) == "40001"


def test_nothing_to_do_for_annotated_foreign_or_gid_less_pvs() -> None:
    assert annotation_patch(pv(annotations={GID_ANNOTATION: "40001"}), DRIVER) is None
    # Someone else's value is left alone (the controller logs a warning).
    assert annotation_patch(pv(annotations={GID_ANNOTATION: "7"}), DRIVER) is None
    for other in (pv(driver="other.csi.io"), pv(handle="something-else"), pv(gid=None),
                  pv(gid="0"), pv(gid="-1"), pv(gid="abc")):
        assert annotation_patch(other, DRIVER) is None
    in_tree = client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name="pvc-2"),
        spec=client.V1PersistentVolumeSpec(glusterfs=client.V1GlusterfsPersistentVolumeSource(
            endpoints="glusterfs-dynamic-x", path="vol_x")))
    assert annotation_patch(in_tree, DRIVER) is None
