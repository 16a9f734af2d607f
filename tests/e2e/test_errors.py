"""What a user sees when provisioning cannot succeed: the claim stays Pending and an event on
it says why, in words they can act on."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest

from tests.e2e.kube import Kube, claim, event_matching, example, unique

pytestmark = pytest.mark.e2e


@pytest.fixture
async def bad_class(kube: Kube) -> AsyncIterator[str]:
    """The example StorageClass with one parameter the driver does not know."""
    body = copy.deepcopy(example("classes/storageclass.yaml"))
    name = unique("bad-param")
    body["metadata"] = {"name": name}
    body["parameters"]["bogusKnob"] = "on"
    await kube.storage.create_storage_class(body)
    try:
        yield name
    finally:
        await kube.storage.delete_storage_class(name)


async def test_unknown_parameter_leaves_the_claim_pending_with_an_event_naming_it(
        kube: Kube, namespace: str, bad_class: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(
        namespace, claim("typo", storage_class=bad_class))
    event = await event_matching(
        kube, namespace, "PersistentVolumeClaim", "typo",
        lambda e: e.reason == "ProvisioningFailed" and "bogusKnob" in (e.message or ""),
        "reason ProvisioningFailed naming bogusKnob")
    assert "InvalidArgument" in event.message or "invalid" in event.message.lower(), \
        event.message
    pvc = await kube.core.read_namespaced_persistent_volume_claim("typo", namespace)
    assert pvc.status.phase == "Pending"


async def test_heketi_refusing_for_space_is_an_event_with_its_reason(
        kube: Kube, namespace: str) -> None:
    await kube.core.create_namespaced_persistent_volume_claim(
        namespace, claim("huge", size="100000Gi"))
    event = await event_matching(
        kube, namespace, "PersistentVolumeClaim", "huge",
        lambda e: e.reason == "ProvisioningFailed" and "No space" in (e.message or ""),
        "Heketi's 'No space' reason")
    assert "ResourceExhausted" in event.message, event.message
    pvc = await kube.core.read_namespaced_persistent_volume_claim("huge", namespace)
    assert pvc.status.phase == "Pending"
