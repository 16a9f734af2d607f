"""`heketi-csi migrate` against a real API server: plan, apply (waiting for pods, resuming
after being killed at every step), dry run and rollback.

The API server, etcd and the controller manager's volume binder and protection controllers
run as processes of this module (the binaries `python -m devtools.k8s build` caches; no
kubelet, no driver): they are what gives claims and PVs their real semantics (immutable
specs, binding, finalizers, uid preconditions). Heketi is the in-memory simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from services.cli import main as cli_main
from services.common import pv_annotations
from services.controller.heketi import HeketiClient, HeketiNotFound
from services.controller.ids import Kind, adoption_mark, make_ref
from services.controller.pv_annotator import GID_ANNOTATION, PvGidAnnotator
from services.migrate import journal
from services.migrate.report import BLOCKED, OK, USAGE, WAITING
from tests.support.conditions import until
from tests.support.intree import (
    DRIVER,
    IN_TREE_CLASS,
    InTree,
    csi_class,
    ensure_class,
    make_in_tree_claim,
)

KEY = "migrate-apiserver-test-key"
TOKEN = "migrate-test-token"
CSI_CLASS = "glusterfs-csi-migrated"
HOSTS = ["192.0.2.10", "192.0.2.11"]
REPO = Path(__file__).resolve().parents[2]


# --- a private control plane ---------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str) -> Path:
    from devtools.k8s.build import binary

    path = binary(name)
    if not path.is_file():
        pytest.fail(f"{name} is not built: `make k8s-build` (or .ci/run) builds it",
                    pytrace=False)
    return path


def _wait_http(url: str, what: str, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 60.0, token: str | None = None) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                body = answer.read()
        except OSError:
            return False
        return body.strip() == b"ok" or b'"health":"true"' in body

    # A loop of its own (this runs in a synchronous fixture); nothing else runs in it.
    asyncio.run(until(ready, lambda: f"{what} ready: {log.read_text()[-2000:]}", timeout, 0.3))


@contextlib.contextmanager
def control_plane(workdir: Path) -> Iterator[Path]:
    """etcd, kube-apiserver and kube-controller-manager (the volume binder, the PV and claim
    protection and the namespace controllers); yields an admin kubeconfig."""
    etcd, apiserver, kcm = (_binary(n) for n in ("etcd", "kube-apiserver",
                                                  "kube-controller-manager"))
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", "sa.key"], cwd=workdir, check=True,
                   capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
                   cwd=workdir, check=True, capture_output=True)
    (workdir / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
    client_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    kubeconfig = workdir / "admin.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": f"https://127.0.0.1:{api_port}", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "admin", "user": {"token": TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}]}))
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, cwd=workdir,
                                    start_new_session=True)
        procs.append(proc)
        return proc, log

    try:
        proc, log = start("etcd", [
            str(etcd), "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}"])
        _wait_http(f"http://127.0.0.1:{client_port}/health", "etcd", proc, log)
        proc, log = start("kube-apiserver", [
            str(apiserver), f"--etcd-servers=http://127.0.0.1:{client_port}",
            f"--secure-port={api_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--cert-dir={workdir / 'certs'}",
            "--token-auth-file=tokens.csv", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-account-key-file=sa.pub", "--service-account-signing-key-file=sa.key",
            "--service-cluster-ip-range=10.231.0.0/24",
            # No controller creates service accounts here; pods are never run anyway.
            "--disable-admission-plugins=ServiceAccount"])
        _wait_http(f"https://127.0.0.1:{api_port}/readyz", "kube-apiserver", proc, log,
                   token=TOKEN)
        start("kube-controller-manager", [
            str(kcm), f"--kubeconfig={kubeconfig}", "--secure-port=0", "--leader-elect=false",
            "--controllers=persistentvolume-binder-controller,"
            "persistentvolume-protection-controller,persistentvolumeclaim-protection-controller,"
            # No garbage collector: the tests' pods name owners that do not exist.
            "namespace-controller"])
        yield kubeconfig
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with control_plane(tmp_path_factory.mktemp("apiserver")) as path:
        yield path


# --- per test: API clients, Heketi, a namespace ------------------------------------------------
@dataclass
class Rig:
    core: Any
    storage: Any
    heketi: HeketiClient
    namespace: str
    cli: list[str]  # the flags every migrate command gets

    async def migrate(self, action: str, *args: str) -> tuple[int, str]:
        """`heketi-csi migrate <action> ...` in this process (its own event loop, in a
        thread); returns the exit code and what it printed."""
        return await asyncio.to_thread(_run_cli, ["migrate", action, *self.cli, *args])

    async def claim(self, name: str, gid: int, **kw: Any) -> InTree:
        return await make_in_tree_claim(self.core, self.heketi, self.namespace, name, gid=gid,
                                        hosts=HOSTS, **kw)

    async def pv(self, name: str) -> Any | None:
        try:
            return await self.core.read_persistent_volume(name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def pvc(self, name: str) -> Any:
        return await self.core.read_namespaced_persistent_volume_claim(name, self.namespace)

    async def exists(self, kind: str, name: str) -> bool:
        read = self.core.read_namespaced_endpoints if kind == "Endpoints" else \
            self.core.read_namespaced_service
        try:
            await read(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def heketi_has(self, heketi_id: str) -> bool:
        try:
            await self.heketi.volume_info(heketi_id)
        except HeketiNotFound:
            return False
        return True

    async def pod(self, name: str, claim: str, owner: str | None = "StatefulSet/app") -> None:
        meta: dict[str, Any] = {"name": name}
        if owner:
            kind, owner_name = owner.split("/")
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind,
                                        "name": owner_name, "uid": str(uuid.uuid4()),
                                        "controller": True}]
        await self.core.create_namespaced_pod(self.namespace, {
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})


def _run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(argv)
    return code, out.getvalue()


@pytest.fixture
async def rig(kubeconfig: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig),
                                  client_configuration=configuration)
    namespace = f"m-{request.node.name.lower().replace('_', '-')[:40].strip('-')}"
    async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY) as sim, \
            HeketiClient(sim.url, "admin", KEY) as heketi, ApiClient(configuration) as api:
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        await core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": namespace}})
        await ensure_class(storage, csi_class(CSI_CLASS, volumetype="replicate:1"))
        key_file = kubeconfig.parent / "heketi.key"
        key_file.write_text(KEY)
        rig = Rig(core, storage, heketi, namespace, [
            "--kubeconfig", str(kubeconfig), "--heketi-url", sim.url,
            "--heketi-key-file", str(key_file), "--log-level", "warning",
            "--class-map", f"{IN_TREE_CLASS}={CSI_CLASS}"])
        try:
            yield rig
        finally:
            for pv in (await core.list_persistent_volume()).items:
                ref = pv.spec.claim_ref
                if ref is not None and ref.namespace == namespace:
                    with contextlib.suppress(ApiException):
                        await core.delete_persistent_volume(pv.metadata.name)
            await core.delete_namespace(namespace)


def volume_id(heketi_id: str) -> str:
    return make_ref(Kind.VOLUME, "default", heketi_id, adoption_mark(KEY, heketi_id)).encode()


# --- plan ------------------------------------------------------------------------------------
async def test_plan_lists_every_in_tree_claim_and_says_why_some_cannot_move(rig: Rig) -> None:
    ready = await rig.claim("ready", gid=2001)
    busy = await rig.claim("busy", gid=2002, prefix="gluster")
    await rig.pod("busy-0", "busy")
    await rig.claim("bare", gid=2003)
    await rig.pod("bare-pod", "bare", owner=None)
    lost = await rig.claim("lost", gid=2004)
    await rig.heketi.delete_volume(lost.volume.id)
    await rig.claim("by-name", gid=2005, annotate_id=False)
    await rig.claim("other-class", gid=2006, storage_class="legacy-gluster")

    code, out = await rig.migrate("plan", "-o", "json")
    assert code == BLOCKED, out
    plan = {p["claim"].split("/")[1]: p for p in json.loads(out)
            if p["claim"].startswith(rig.namespace + "/")}
    assert plan["ready"]["status"] == "ready"
    assert plan["ready"]["volumeId"] == volume_id(ready.volume.id)
    assert plan["ready"]["heketiVolume"]["name"] == f"vol_{ready.volume.id}"
    assert plan["ready"]["storageClass"] == {"from": IN_TREE_CLASS, "to": CSI_CLASS}
    assert plan["busy"]["status"] == "in use"
    assert plan["busy"]["pods"] == ["busy-0 (StatefulSet/app)"]
    assert plan["busy"]["heketiVolume"]["name"] == busy.volume.name
    assert plan["bare"]["status"] == "cannot migrate"
    assert "no owner" in plan["bare"]["reasons"][0]
    assert plan["lost"]["status"] == "cannot migrate"
    assert f"has no volume {lost.volume.id}" in plan["lost"]["reasons"][0]
    assert plan["by-name"]["status"] == "ready"  # found by its name, vol_<id>
    assert plan["other-class"]["status"] == "cannot migrate"
    assert "no StorageClass legacy-gluster" in plan["other-class"]["reasons"][0]

    code, text = await rig.migrate("plan", "--pvc", f"{rig.namespace}/ready")
    assert code == OK and "would migrate" in text and f"pvc-{ready.pvc_uid}-csi" in text
    code, text = await rig.migrate("plan", "--pvc", f"{rig.namespace}/nope")
    assert code == USAGE and "nope" in text
    # plan changed nothing
    assert (await rig.pv(ready.pv)).spec.persistent_volume_reclaim_policy == "Delete"


# --- apply -----------------------------------------------------------------------------------
async def assert_migrated(rig: Rig, old: InTree, policy: str = "Delete") -> Any:
    assert await rig.pv(old.pv) is None, "the in-tree PV is still there"
    new = await rig.pv(f"{old.pv}-csi")
    assert new is not None
    csi = new.spec.csi
    assert csi.driver == DRIVER and csi.volume_handle == volume_id(old.volume.id)
    assert len(csi.volume_handle) <= 128
    assert csi.volume_attributes["volume"] == old.volume.name
    assert csi.volume_attributes["gid"] == str(old.volume.gid)
    notes = new.metadata.annotations
    assert notes["pv.beta.kubernetes.io/gid"] == str(old.volume.gid)
    assert notes["pv.kubernetes.io/provisioned-by"] == DRIVER
    assert notes[pv_annotations.STATE] == journal.DONE
    assert new.spec.persistent_volume_reclaim_policy == policy
    assert new.spec.storage_class_name == CSI_CLASS
    assert new.spec.mount_options == ["log-level=ERROR"]
    assert new.spec.capacity["storage"] == f"{old.volume.size_gib}Gi"
    pvc = await rig.pvc(old.claim)
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == new.metadata.name
    assert pvc.metadata.uid != old.pvc_uid
    assert pvc.metadata.labels == {"app": old.claim}
    assert pvc.metadata.annotations["team"] == "storage"
    assert pvc.spec.storage_class_name == CSI_CLASS
    assert not await rig.exists("Endpoints", old.endpoints)
    assert not await rig.exists("Service", old.endpoints)
    assert await rig.heketi_has(old.volume.id)
    return new


async def test_apply_moves_a_claim_and_a_second_run_changes_nothing(rig: Rig) -> None:
    first = await rig.claim("data", gid=2101)
    second = await rig.claim("logs", gid=2102, reclaim="Retain", prefix="k8s")
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/data",
                                  "--pvc", f"{rig.namespace}/logs")
    assert code == OK, out
    await assert_migrated(rig, first)
    new = await assert_migrated(rig, second, policy="Retain")
    assert "2 done" in out
    version = new.metadata.resource_version
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/logs")
    assert code == OK and "already migrated" in out
    assert (await rig.pv(new.metadata.name)).metadata.resource_version == version


async def test_apply_waits_for_pods_never_deletes_them_and_resumes(rig: Rig) -> None:
    used = await rig.claim("used", gid=2201)
    await rig.pod("used-0", "used")
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/used",
                                  "--pod-wait", "1")
    assert code == WAITING, out
    assert "used-0 (StatefulSet/app)" in out
    await rig.core.read_namespaced_pod("used-0", rig.namespace)  # still there
    old = await rig.pv(used.pv)
    assert old.spec.persistent_volume_reclaim_policy == "Retain"
    assert old.metadata.annotations[pv_annotations.RECLAIM_POLICY] == "Delete"
    assert (await rig.pvc("used")).metadata.uid == used.pvc_uid
    assert await rig.pv(f"{used.pv}-csi") is None

    await rig.core.delete_namespaced_pod("used-0", rig.namespace, grace_period_seconds=0)
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/used")
    assert code == OK, out
    await assert_migrated(rig, used)  # the original policy, Delete, came back


async def test_apply_killed_at_each_step_is_finished_by_the_next_run(rig: Rig) -> None:
    steps = ["reclaim policy", "creating CSI PV", "deleting the claim", "deleting the in-tree",
             "re-creating the claim", "deleting Endpoints", "deleting Service"]
    claims = [await rig.claim(f"crash-{i}", gid=2300 + i) for i in range(len(steps))]
    for step, claim in zip(steps, claims, strict=True):
        killed = await kill_apply_at(rig, claim, step)
        assert killed, f"apply finished before reaching {step!r}"
        code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/{claim.claim}")
        assert code == OK, f"after a kill at {step!r}: {out}"
        await assert_migrated(rig, claim)


async def kill_apply_at(rig: Rig, claim: InTree, step: str) -> bool:
    """Run apply as its own process and SIGKILL it as soon as it announces `step`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "migrate", "apply", *rig.cli,
        "--pvc", f"{rig.namespace}/{claim.claim}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, cwd=REPO)
    assert proc.stdout is not None
    killed = False
    while line := await proc.stdout.readline():
        if step in line.decode():
            proc.kill()
            killed = True
            break
    await proc.wait()
    return killed


async def test_dry_run_changes_nothing(rig: Rig) -> None:
    claim = await rig.claim("dry", gid=2401)
    before = (await rig.pv(claim.pv)).metadata.resource_version
    code, out = await rig.migrate("apply", "--dry-run", "--pvc", f"{rig.namespace}/dry")
    assert f"{rig.namespace}/dry: nothing to do: would set PV {claim.pv} to Retain" in out, out
    assert code == OK, out
    assert (await rig.pv(claim.pv)).metadata.resource_version == before
    assert await rig.pv(f"{claim.pv}-csi") is None


# --- rollback --------------------------------------------------------------------------------
async def test_rollback_restores_the_in_tree_objects_unless_used_since(rig: Rig) -> None:
    claim = await rig.claim("back", gid=2501)
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/back")
    assert code == OK, out
    await rig.pod("back-0", "back")  # used since the move
    code, out = await rig.migrate("rollback", "--pvc", f"{rig.namespace}/back")
    assert code == BLOCKED and "used since the move by pod back-0" in out, out
    await rig.core.delete_namespaced_pod("back-0", rig.namespace, grace_period_seconds=0)
    code, out = await rig.migrate("rollback", "--pvc", f"{rig.namespace}/back",
                                  "--force")
    assert code == OK, out
    old = await rig.pv(claim.pv)
    assert old.spec.glusterfs.path == claim.volume.name
    assert old.spec.persistent_volume_reclaim_policy == "Delete"
    assert not any(k.startswith(pv_annotations.PREFIX) for k in old.metadata.annotations)
    pvc = await rig.pvc("back")
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == claim.pv
    assert pvc.spec.storage_class_name == IN_TREE_CLASS
    assert await rig.exists("Endpoints", claim.endpoints)
    assert await rig.exists("Service", claim.endpoints)
    assert await rig.pv(f"{claim.pv}-csi") is None
    assert await rig.heketi_has(claim.volume.id)
    # ... and it can be migrated again.
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/back")
    assert code == OK, out
    await assert_migrated(rig, claim)


async def test_rollback_of_a_move_stopped_half_way(rig: Rig) -> None:
    claim = await rig.claim("half", gid=2601)
    assert await kill_apply_at(rig, claim, "deleting the in-tree")
    code, out = await rig.migrate("rollback", "--pvc", f"{rig.namespace}/half")
    assert code == OK, out
    assert (await rig.pvc("half")).spec.volume_name == claim.pv
    assert (await rig.pv(claim.pv)).spec.persistent_volume_reclaim_policy == "Delete"
    assert await rig.pv(f"{claim.pv}-csi") is None
    assert await rig.heketi_has(claim.volume.id)



# --- the controller's part -------------------------------------------------------------------
async def test_the_controller_annotates_gids_and_marks_migrated_pvs_used(
        rig: Rig, kubeconfig: Path) -> None:
    moved = await rig.claim("used-later", gid=2701)
    code, out = await rig.migrate("apply", "--pvc", f"{rig.namespace}/used-later")
    assert code == OK, out
    plain = f"plain-{rig.namespace}"[:60]
    await rig.core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": plain},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": rig.namespace, "name": "nobody"},
                 "csi": {"driver": DRIVER, "volumeHandle": volume_id("f" * 32),
                         "volumeAttributes": {"volume": "v", "hosts": "h", "gid": "40123"}}}})
    annotator = PvGidAnnotator(DRIVER, str(kubeconfig), retry_seconds=1)
    task = asyncio.create_task(annotator.run())
    try:
        async def gid_annotated() -> bool:
            pv = await rig.pv(plain)
            return bool((pv.metadata.annotations or {}).get(GID_ANNOTATION) == "40123")

        await until(gid_annotated, "the GID annotation", 30, 0.2)
        new_pv = f"{moved.pv}-csi"
        await rig.storage.create_volume_attachment({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": f"csi-{rig.namespace}"[:60]},
            "spec": {"attacher": DRIVER, "nodeName": "node-1",
                     "source": {"persistentVolumeName": new_pv}}})

        async def marked() -> bool:
            pv = await rig.pv(new_pv)
            return pv_annotations.USED_AT in (pv.metadata.annotations or {})

        await until(marked, "the used-at mark", 30, 0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rig.storage.delete_volume_attachment(f"csi-{rig.namespace}"[:60])
    code, out = await rig.migrate("rollback", "--pvc", f"{rig.namespace}/used-later")
    assert code == BLOCKED and "a pod used the claim since the move" in out, out
