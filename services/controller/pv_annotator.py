"""Give the PVs of our volumes the GID annotation the in-tree plugin gave them.

With `gidMin`/`gidMax` every volume has a GID of its own (its root is `root:<gid>`, mode
2775). The in-tree provisioner wrote it into the PV as `pv.beta.kubernetes.io/gid`, and
kubelet adds that GID to the supplemental groups of every pod using the PV, so non-root pods
could write with no change to their spec. A CSI driver does not create PVs (external-
provisioner does, named after the CreateVolume name, with the volume context as
`spec.csi.volumeAttributes`), so the controller watches PVs and adds the annotation to every
PV of this driver whose volume context has a `gid` and that lacks it. Idempotent: a PV that
carries the annotation already, with any value, is left alone. When it cannot (no API, no
RBAC) it says so in one clear log line and retries later; provisioning never waits on it.

It also watches VolumeAttachments: the first time a PV moved by `heketi-csi migrate` is
attached for a pod, the PV gets `migrate.heketi-csi.io/used-at`, which `migrate rollback`
reads (a claim used since its move is not rolled back without --force).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from services.common import context_keys
from services.common.errors import NotFound
from services.common.logging import get_logger
from services.common.pv_annotations import STATE, USED_AT
from services.controller.ids import Kind, parse_ref

GID_ANNOTATION = "pv.beta.kubernetes.io/gid"
_log = get_logger("pv-annotator")
_RBAC_HINT = ("the controller's ServiceAccount needs get, list, watch and patch on "
              "persistentvolumes and list, watch on volumeattachments "
              "(k8s/base/rbac-controller.yaml)")
_WITHOUT = "non-root pods need the volume's GID in securityContext.supplementalGroups"


def wanted_gid(pv: Any, driver_name: str) -> str | None:
    """The GID annotation value a PV (a kubernetes_asyncio model) should carry, or None when
    the PV is not one of this driver's volumes with a GID."""
    csi = pv.spec.csi if pv.spec is not None else None
    if csi is None or csi.driver != driver_name:
        return None
    try:
        parse_ref(csi.volume_handle or "", Kind.VOLUME)
    except NotFound:
        return None
    gid = (csi.volume_attributes or {}).get(context_keys.GID, "")
    return gid if gid.isdigit() and int(gid) > 0 else None


def annotation_patch(pv: Any, driver_name: str) -> dict[str, Any] | None:
    """The merge patch that adds the annotation, or None when there is nothing to do.
    Carries the PV's resourceVersion: a PV changed meanwhile answers 409, and the watch
    brings the new version."""
    gid = wanted_gid(pv, driver_name)
    if gid is None or GID_ANNOTATION in (pv.metadata.annotations or {}):
        return None
    return {"metadata": {"annotations": {GID_ANNOTATION: gid},
                         "resourceVersion": pv.metadata.resource_version}}


class PvGidAnnotator:
    """List, then watch, PersistentVolumes and VolumeAttachments; annotate our PVs.
    `run()` runs until cancelled."""

    def __init__(self, driver_name: str, kubeconfig: str | None = None,
                 retry_seconds: float = 30.0, watch_seconds: int = 300) -> None:
        self._driver = driver_name
        self._kubeconfig = kubeconfig
        self._retry = retry_seconds
        self._watch_seconds = watch_seconds
        self._warned: set[str] = set()
        self._used: set[str] = set()
        self.annotated = 0

    async def _api_client(self) -> Any:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        if self._kubeconfig:
            await config.load_kube_config(config_file=self._kubeconfig,
                                          client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        else:
            return None
        return client.ApiClient(configuration)

    async def run(self) -> None:
        try:
            api = await self._api_client()
        except Exception as exc:
            _log.error(f"cannot load the Kubernetes client configuration; PVs will not get "
                       f"{GID_ANNOTATION} and {_WITHOUT}", error=str(exc))
            return
        if api is None:
            _log.info(f"not running in Kubernetes and no --kubeconfig: PVs will not get "
                      f"{GID_ANNOTATION}")
            return
        from kubernetes_asyncio import client

        core = client.CoreV1Api(api)
        storage = client.StorageV1Api(api)
        try:
            await asyncio.gather(
                self._follow("PersistentVolumes", core.list_persistent_volume,
                             lambda pv: self.reconcile(core, pv)),
                self._follow("VolumeAttachments", storage.list_volume_attachment,
                             lambda attachment: self.mark_used(core, attachment)))
        finally:
            await api.close()

    async def _follow(self, what: str, list_call: Any,
                      handle: Callable[[Any], Awaitable[None]]) -> None:
        """List, then watch, forever: every object seen goes to `handle`."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._list_and_watch(list_call, handle)
                if loop.time() - started > 1.0:
                    continue  # the watch ended (its timeout): list again
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if getattr(exc, "status", None) == 410:
                    continue  # the watch's resourceVersion expired: list again
                self._log_failure(f"cannot list or watch {what}", exc)
            await asyncio.sleep(self._retry)

    async def _list_and_watch(self, list_call: Any,
                              handle: Callable[[Any], Awaitable[None]]) -> None:
        from kubernetes_asyncio import watch

        listing = await list_call()
        for item in listing.items:
            await handle(item)
        async with watch.Watch() as stream:
            async for event in stream.stream(
                    list_call, timeout_seconds=self._watch_seconds,
                    resource_version=listing.metadata.resource_version):
                if event["type"] in ("ADDED", "MODIFIED"):
                    await handle(event["object"])

    async def mark_used(self, core: Any, attachment: Any) -> None:
        """Record on a migrated PV that a pod used it (once; the first attachment)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        spec = attachment.spec
        name = spec.source.persistent_volume_name if spec.source else None
        if spec.attacher != self._driver or not name or name in self._used:
            return
        try:
            pv = await core.read_persistent_volume(name)
            notes = pv.metadata.annotations or {}
            if STATE in notes and USED_AT not in notes:
                created = attachment.metadata.creation_timestamp
                await core.patch_persistent_volume(name, {"metadata": {
                    "annotations": {USED_AT: created.strftime("%Y-%m-%dT%H:%M:%SZ")},
                    "resourceVersion": pv.metadata.resource_version}})
                _log.info("migrated PV used by a pod since its move", pv=name)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or changed: the next event retries
                return
            self._log_failure(f"cannot record the use of migrated PV {name}", exc)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._log_failure(f"cannot record the use of migrated PV {name}", exc)
            return
        self._used.add(name)

    async def reconcile(self, core: Any, pv: Any) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        name = pv.metadata.name
        patch = annotation_patch(pv, self._driver)
        if patch is None:
            current = (pv.metadata.annotations or {}).get(GID_ANNOTATION)
            gid = wanted_gid(pv, self._driver)
            if gid is not None and current != gid and name not in self._warned:
                self._warned.add(name)
                _log.warning(f"PV carries {GID_ANNOTATION}={current}, not its volume's GID; "
                             "left as it is", pv=name, volume_gid=gid)
            return
        gid = patch["metadata"]["annotations"][GID_ANNOTATION]
        try:
            await core.patch_persistent_volume(name, patch)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or changed meanwhile: the watch follows up
                return
            self._log_failure(f"cannot annotate PV {name} with {GID_ANNOTATION}={gid}", exc)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._log_failure(f"cannot annotate PV {name} with {GID_ANNOTATION}={gid}", exc)
            return
        self.annotated += 1
        _log.info("PV annotated with its volume's GID", pv=name, gid=gid)

    def _log_failure(self, what: str, exc: Exception) -> None:
        status = getattr(exc, "status", None)
        if status in (401, 403):
            _log.error(f"{what}: HTTP {status}; {_RBAC_HINT}. Until then {_WITHOUT}",
                       retry_in_s=self._retry)
        else:
            _log.warning(f"{what}; retrying", error=f"{type(exc).__name__}: {exc}"[:300],
                         retry_in_s=self._retry)
