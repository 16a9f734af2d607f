"""`heketi-csi migrate` in the real cluster: in-tree GlusterFS claims as the removed
provisioner left them (Heketi volumes named `vol_<id>` and `<prefix>_<ns>_<pvc>_<uuid>`, PVs
with `spec.glusterfs`, per-claim Endpoints and Service, the in-tree annotations, bound
claims, a StatefulSet using one) move to the driver with their data; the adopted volumes
then expand, snapshot and are deleted by their reclaim policy; a killed apply is finished
by the next run; rollback restores a claim. Heketi loses a volume only when a PV with
reclaim Delete is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from services.common.commands import run_command
from services.controller.heketi import HeketiClient, HeketiNotFound, VolumeInfo
from services.controller.params import parse_durability
from tests.e2e.conftest import Cluster
from tests.e2e.kube import (
    DRIVER_NAMESPACE,
    STORAGE_CLASS,
    TEST_IMAGE,
    Kube,
    create_snapshot,
    pod_log,
    pod_phase,
    read_file,
    wait_for,
    wait_gone,
)
from tests.support.intree import IN_TREE_CLASS, InTree, heketi_volume, make_in_tree_claim

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# Inside the example class's gidMin..gidMax, as an in-tree class with the same range made
# them: restores and clones of the adopted volumes keep it.
GIDS = iter(range(49900, 49999))


@dataclass
class Migrate:
    """`heketi-csi migrate` as an administrator runs it, from this machine."""

    kube: Kube
    heketi: HeketiClient
    namespace: str
    flags: list[str]
    made: list[str]  # Heketi ids of the in-tree volumes this test made

    def argv(self, action: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "services.cli", "migrate", action, *self.flags, *args]

    async def run(self, action: str, *args: str) -> tuple[int, str]:
        """Exit code and what it printed (its log lines, on stderr, only when it failed)."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv(action, *args), cwd=REPO, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 600)
        assert proc.returncode is not None
        text = out.decode() + (err.decode() if proc.returncode else "")
        return proc.returncode, text

    def pvc(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    async def in_tree(self, claim: str, data: str, **kw: Any) -> InTree:
        """An in-tree claim whose volume holds `before.txt` = data (written through a FUSE
        mount on this host: no plugin in this cluster can mount an in-tree PV); its
        Endpoints are the volume's servers, as the in-tree provisioner made them."""
        # made as the in-tree provisioner made it: of the class's durability (a restore of
        # its snapshot must keep the class's settings)
        cls = await self.kube.storage.read_storage_class(STORAGE_CLASS)
        info = await heketi_volume(self.heketi, gid=next(GIDS), namespace=self.namespace,
                                   claim=claim, prefix=kw.pop("prefix", None),
                                   durability=parse_durability(cls.parameters["volumetype"]))
        self.made.append(info.id)
        await write_on_volume(info, "before.txt", data)
        return await make_in_tree_claim(self.kube.core, self.heketi, self.namespace, claim,
                                        gid=info.gid, hosts=list(info.mount.hosts), volume=info,
                                        **kw)

    async def heketi_has(self, heketi_id: str) -> bool:
        try:
            await self.heketi.volume_info(heketi_id)
        except HeketiNotFound:
            return False
        return True


async def write_on_volume(info: VolumeInfo, name: str, text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="hcsi-migrate-") as mountpoint:
        source = f"{info.mount.hosts[0]}:/{info.name}"
        mounted = await run_command(["mount", "-t", "glusterfs", source, mountpoint], 60)
        assert mounted.returncode == 0, mounted.output
        try:
            await asyncio.to_thread((Path(mountpoint) / name).write_text, text)
        finally:
            await run_command(["umount", mountpoint], 60)


async def controller_heketi_url(kube: Kube) -> str:
    sts = await kube.apps.read_namespaced_stateful_set("heketi-csi-controller",
                                                       DRIVER_NAMESPACE)
    for container in sts.spec.template.spec.containers:
        for arg in container.args or []:
            if arg.startswith("--heketi-url="):
                return str(arg.split("=", 1)[1])
    raise AssertionError("the controller has no --heketi-url")


@pytest.fixture
async def migrate(kube: Kube, heketi: HeketiClient, namespace: str,
                  cluster: Cluster) -> AsyncIterator[Migrate]:
    if not cluster.local:
        pytest.skip("writes the in-tree data through a gluster mount on the node's host")
    flags = ["--kubeconfig", str(cluster.kubeconfig), "--heketi-url",
             await controller_heketi_url(kube), "--heketi-connect-url", cluster.heketi_url,
             "--class-map", f"{IN_TREE_CLASS}={STORAGE_CLASS}", "--log-level", "warning"]
    if cluster.context:
        flags += ["--context", cluster.context]
    tool = Migrate(kube, heketi, namespace, flags, [])
    try:
        yield tool
    finally:
        await clean_up(tool)


async def clean_up(tool: Migrate) -> None:
    """What the namespace's deletion cannot remove: in-tree PVs (no plugin deletes them) and
    PVs with reclaim Retain go with their claims; Heketi volumes this test made and that a
    reclaim Delete did not remove are deleted by id."""
    core = tool.kube.core
    for pv in (await core.list_persistent_volume()).items:
        ref = pv.spec.claim_ref
        if ref is None or ref.namespace != tool.namespace:
            continue
        if pv.spec.glusterfs is not None or pv.spec.persistent_volume_reclaim_policy == "Retain":
            if pv.spec.persistent_volume_reclaim_policy != "Retain":
                await core.patch_persistent_volume(
                    pv.metadata.name, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
            try:
                await core.delete_persistent_volume(pv.metadata.name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
    for heketi_id in tool.made:
        with contextlib.suppress(HeketiNotFound):
            await tool.heketi.delete_volume(heketi_id)


def statefulset(name: str, claim_template: str) -> Any:
    """A non-root StatefulSet (no fsGroup) that prints the data written before the move,
    and writes through the volume's GID."""
    script = ("cat /data/before.txt; echo; id -G; echo after > /data/after.txt && echo wrote; "
              "exec sleep 3600")
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {
            "serviceName": name, "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                        "runAsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "main", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                        "command": ["/bin/sh", "-c", script],
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": claim_template, "mountPath": "/data"}],
                    }],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": claim_template},
                "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": IN_TREE_CLASS,
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }


async def scale(kube: Kube, namespace: str, name: str, replicas: int) -> None:
    await kube.apps.patch_namespaced_stateful_set_scale(
        name, namespace, {"spec": {"replicas": replicas}})


async def heketi_id_of(kube: Kube, namespace: str, claim: str) -> str:
    pvc = await kube.core.read_namespaced_persistent_volume_claim(claim, namespace)
    pv = await kube.core.read_persistent_volume(pvc.spec.volume_name)
    handle: str = pv.spec.csi.volume_handle
    assert handle.startswith("ha1:") and len(handle) <= 128, handle
    return handle.split(":")[2]


async def test_in_tree_claims_move_with_their_data_and_live_on_as_adopted_volumes(
        kube: Kube, namespace: str, migrate: Migrate) -> None:
    web = await migrate.in_tree("data-web-0", "written by the in-tree era")
    keep = await migrate.in_tree("keep", "kept", reclaim="Retain", prefix="k8s")
    drop = await migrate.in_tree("drop", "dropped")
    await kube.apps.create_namespaced_stateful_set(namespace, statefulset("web", "data"))

    async def pod_exists() -> bool:
        return bool((await kube.core.list_namespaced_pod(namespace)).items)

    await wait_for("the StatefulSet's pod", pod_exists, timeout=60)
    claims = [f"--pvc={migrate.pvc(c)}" for c in ("data-web-0", "keep", "drop")]
    code, out = await migrate.run("plan", "-o", "json", *claims)
    assert code == 0, out
    mine = {p["claim"].split("/")[1]: p for p in json.loads(out)}
    assert mine["data-web-0"]["status"] == "in use", out
    assert mine["data-web-0"]["pods"] == ["web-0 (StatefulSet/web)"]
    assert mine["keep"]["status"] == mine["drop"]["status"] == "ready"
    assert mine["keep"]["heketiVolume"]["name"] == keep.volume.name  # <prefix>_<ns>_<pvc>_...
    assert mine["drop"]["heketiVolume"]["name"] == f"vol_{drop.volume.id}"

    # apply waits for the StatefulSet's pod and names it; scaling down lets it go on.
    proc = await asyncio.create_subprocess_exec(
        *migrate.argv("apply", "--pod-wait", "300", *claims),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    while line := (await proc.stdout.readline()).decode():
        lines.append(line)
        if "waiting for these pods" in line:
            assert "web-0 (StatefulSet/web)" in line
            await scale(kube, namespace, "web", 0)
    assert await proc.wait() == 0, "".join(lines)
    output = "".join(lines)
    assert "3 done" in output, output
    downtimes = [float(m) for m in re.findall(r"unusable for ([0-9.]+) s", output)]
    assert len(downtimes) == 3 and max(downtimes) < 60, output
    print(f"migrate apply, per-claim downtime: {downtimes} s")

    # The StatefulSet's pod starts again on the CSI PV, reads the old data, and (non-root,
    # no fsGroup) writes through the GID kept in pv.beta.kubernetes.io/gid.
    await scale(kube, namespace, "web", 1)
    await pod_phase(kube, namespace, "web-0", {"Running"}, timeout=180)

    async def wrote() -> str | None:
        log = await pod_log(kube, namespace, "web-0")
        return log if "wrote" in log else None

    log = await wait_for("web-0 to write", wrote, timeout=60)
    assert log.splitlines()[0] == "written by the in-tree era", log
    assert str(web.volume.gid) in log.splitlines()[1].split(), log

    # Expand the adopted volume online.
    await kube.core.patch_namespaced_persistent_volume_claim(
        "data-web-0", namespace, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}})

    async def grown() -> bool:
        pvc = await kube.core.read_namespaced_persistent_volume_claim("data-web-0", namespace)
        return bool((pvc.status.capacity or {}).get("storage") == "2Gi")

    await wait_for("the adopted claim to reach 2Gi", grown, timeout=180)
    assert (await migrate.heketi.volume_info(web.volume.id)).size_gib == 2

    # Snapshot it and restore the snapshot.
    await create_snapshot(kube, namespace, "web-snap", "data-web-0")
    restored: Any = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "restored"},
                "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                         "resources": {"requests": {"storage": "2Gi"}},
                         "dataSource": {"apiGroup": "snapshot.storage.k8s.io",
                                        "kind": "VolumeSnapshot", "name": "web-snap"}}}
    await kube.core.create_namespaced_persistent_volume_claim(namespace, restored)
    assert await read_file(kube, namespace, "restored", "before.txt") == \
        "written by the in-tree era"
    assert await read_file(kube, namespace, "keep", "before.txt") == "kept"

    # Reclaim policies: Delete removes the adopted Heketi volume, Retain keeps it.
    for name in ("drop", "keep"):
        pv_name = (await kube.core.read_namespaced_persistent_volume_claim(
            name, namespace)).spec.volume_name
        await kube.core.delete_namespaced_persistent_volume_claim(name, namespace)
        if name == "drop":
            await wait_gone(f"PV {pv_name}",
                            functools.partial(kube.core.read_persistent_volume, pv_name), 180)
        else:
            async def released(n: str = pv_name) -> bool:
                pv = await kube.core.read_persistent_volume(n)
                return bool(pv.status.phase == "Released")

            await wait_for(f"PV {pv_name} to be released", released, timeout=60)
    assert not await migrate.heketi_has(drop.volume.id)
    assert await migrate.heketi_has(keep.volume.id)
    assert await migrate.heketi_has(web.volume.id)
    await scale(kube, namespace, "web", 0)


async def test_a_killed_apply_is_finished_by_the_next_run_and_rollback_restores(
        kube: Kube, namespace: str, migrate: Migrate) -> None:
    crash = await migrate.in_tree("crash", "survives a crash")
    back = await migrate.in_tree("back", "goes back")

    proc = await asyncio.create_subprocess_exec(
        *migrate.argv("apply", "--pvc", migrate.pvc("crash")), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    killed = False
    while line := (await proc.stdout.readline()).decode():
        if "deleting the in-tree PV" in line:
            proc.kill()
            killed = True
            break
    await proc.wait()
    assert killed, "apply finished before it could be killed"
    code, out = await migrate.run("plan", "--pvc", migrate.pvc("crash"))
    assert "in progress" in out, out
    code, out = await migrate.run("apply", "--pvc", migrate.pvc("crash"))
    assert code == 0 and "resuming" in out, out
    assert await read_file(kube, namespace, "crash", "before.txt") == "survives a crash"
    await heketi_id_of(kube, namespace, "crash")

    code, out = await migrate.run("apply", "--pvc", migrate.pvc("back"))
    assert code == 0, out
    assert await read_file(kube, namespace, "back", "before.txt") == "goes back"
    # Used since the move (the reader pod): refused without --force.
    code, out = await migrate.run("rollback", "--pvc", migrate.pvc("back"))
    assert code == 3 and "used the claim since the move" in out, out
    code, out = await migrate.run("rollback", "--pvc", migrate.pvc("back"), "--force")
    assert code == 0, out
    pvc = await kube.core.read_namespaced_persistent_volume_claim("back", namespace)
    assert pvc.spec.volume_name == back.pv and pvc.status.phase == "Bound"
    pv = await kube.core.read_persistent_volume(back.pv)
    assert pv.spec.glusterfs.path == back.volume.name
    assert pv.spec.persistent_volume_reclaim_policy == "Delete"
    await kube.core.read_namespaced_endpoints(back.endpoints, namespace)
    assert await migrate.heketi_has(back.volume.id) and await migrate.heketi_has(crash.volume.id)
