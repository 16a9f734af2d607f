"""Mounts that survive, measured in the local Kubernetes cluster (prints numbers; asserts
nothing). Needs the cluster up with the driver deployed (`python -m devtools.k8s up`, then
`python -m devtools.k8s deploy`); the node is this machine.

    python bench/bench_mount_recovery.py [--restarts 10] [--deaths 10] [--volumes 50]

1. Client survival: a writer pod (HostToContainer) fsyncs a write every 50 ms while the node
   plugin pod is deleted `--restarts` times (each time the DaemonSet's new pod is awaited):
   how many restarts left the volume's gluster client process the same, and how many writes
   failed.
2. Recovery time: `--deaths` times, the writer's gluster client is killed (SIGKILL); from the
   kill to the writer's next successful write (the kill's time on this host, the write's
   from its log line's timestamp taken by the container runtime, same clock): p50/p99.
3. Memory with `--volumes` volumes staged and published (one pod mounting them all): the node
   plugin process's RSS, and the memory charged to the clients' own cgroups.

Everything it creates lives in namespace `bench-mount-recovery`, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from bench.common import format_bytes, rss_bytes, summarize
from devtools.k8s.config import KUBECONFIG
from services.node.mounter import gluster_clients_of

NAMESPACE = "bench-mount-recovery"
DRIVER = "glusterfs.heketi.csi.io"
DRIVER_NAMESPACE = "heketi-csi"
NODE_LABEL = "app.kubernetes.io/name=heketi-csi-node"
STORAGE_CLASS = "glusterfs-csi"
IMAGE = "docker.io/library/busybox:1.36.1"
WRITER = ("while true; do "
          "if echo x | dd of=/data/w oflag=append conv=notrunc,fsync 2>/dev/null; "
          "then echo ok; else echo ERR; fi; usleep 50000; done")


async def until(what: str, probe: Any, timeout: float = 300, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await probe()
        except ApiException as exc:
            if exc.status not in (400, 404):
                raise
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(interval)


class Cluster:
    def __init__(self, api: ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    async def claim(self, name: str) -> Any:
        await self.core.create_namespaced_persistent_volume_claim(NAMESPACE, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                     "resources": {"requests": {"storage": "1Gi"}}}})

    async def bound(self, name: str) -> Any:
        async def ready() -> Any:
            pvc = await self.core.read_namespaced_persistent_volume_claim(name, NAMESPACE)
            return pvc if pvc.status.phase == "Bound" else None

        pvc = await until(f"claim {name} to bind", ready)
        return await self.core.read_persistent_volume(pvc.spec.volume_name)

    async def pod(self, name: str, claims: list[str], script: str) -> Any:
        mounts = [{"name": f"v{i}", "mountPath": f"/data{'' if i == 0 else i}",
                   "mountPropagation": "HostToContainer"} for i in range(len(claims))]
        volumes = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                   for i, c in enumerate(claims)]
        await self.core.create_namespaced_pod(NAMESPACE, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                     "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                                     "command": ["/bin/sh", "-c", script],
                                     "volumeMounts": mounts}],
                     "volumes": volumes}})

        async def running() -> Any:
            pod = await self.core.read_namespaced_pod(name, NAMESPACE)
            return pod if pod.status.phase == "Running" else None

        return await until(f"pod {name} to run", running, 600)

    async def log(self, pod: str, since: int | None = None) -> list[tuple[float, str]]:
        text = await self.core.read_namespaced_pod_log(pod, NAMESPACE, timestamps=True,
                                                       since_seconds=since)
        lines = []
        for line in text.splitlines():
            stamp, _, rest = line.partition(" ")
            lines.append((_epoch(stamp), rest))
        return lines

    async def node_pod(self, not_uid: str | None = None) -> Any:
        pods = await self.core.list_namespaced_pod(DRIVER_NAMESPACE, label_selector=NODE_LABEL)
        for pod in pods.items:
            statuses = pod.status.container_statuses or []
            if (pod.metadata.uid != not_uid and pod.metadata.deletion_timestamp is None
                    and statuses and all(s.ready for s in statuses)):
                return pod
        return None


def _epoch(stamp: str) -> float:
    """RFC 3339 with nanoseconds (the runtime's log timestamps) as epoch seconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def staging_of(pv: Any) -> str:
    digest = hashlib.sha256(pv.spec.csi.volume_handle.encode()).hexdigest()
    return f"/var/lib/kubelet/plugins/kubernetes.io/csi/{DRIVER}/{digest}/globalmount"


def node_process() -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for i, arg in enumerate(argv[:-1]):
                if os.path.basename(arg) == b"heketi-csi" and argv[i + 1] == b"node":
                    return int(entry.name)
    raise LookupError("no heketi-csi node process")


async def survival(cluster: Cluster, staging: str, restarts: int) -> None:
    [pid] = gluster_clients_of(staging)
    same = 0
    started = time.time()
    for _ in range(restarts):
        old = await until("a ready node plugin pod", cluster.node_pod)
        await cluster.core.delete_namespaced_pod(old.metadata.name, DRIVER_NAMESPACE)
        await until("the node plugin pod to be replaced",
                    lambda old=old: cluster.node_pod(not_uid=old.metadata.uid))
        same += gluster_clients_of(staging) == [pid]
    lines = await cluster.log("writer", since=int(time.time() - started) + 2)
    failed = sum(1 for _, text in lines if text == "ERR")
    print(f"client survival across node plugin restarts: {same}/{restarts} "
          f"(same gluster client pid); failed writes meanwhile: {failed} of {len(lines)}; "
          f"the fresh node process: RSS {format_bytes(rss_bytes(node_process()))}")


async def recovery(cluster: Cluster, staging: str, deaths: int) -> None:
    times = []
    for _ in range(deaths):
        [pid] = gluster_clients_of(staging)
        killed = time.time()
        os.kill(pid, signal.SIGKILL)

        async def back(killed: float = killed) -> float | None:
            after = [(s, t) for s, t in await cluster.log("writer", since=30) if s > killed]
            if "ERR" in (t for _, t in after):
                first = next(i for i, (_, t) in enumerate(after) if t == "ERR")
                return next((s - killed for s, t in after[first:] if t == "ok"), None)
            if len(after) >= 20:  # a second of writes, none failed: back before the next
                return next(s - killed for s, t in after if t == "ok")
            return None

        times.append(await until("a write after the client's death", back, 60, 0.2))
        await until("a new client", lambda pid=pid: _new_client(staging, pid))
    summary = summarize(times)
    print(f"client death -> next successful write: {summary.format()} "
          f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms)")


async def _new_client(staging: str, old: int) -> bool:
    now = gluster_clients_of(staging)
    return bool(now) and now != [old]


def client_memory() -> tuple[int, int]:
    """(groups, bytes charged to them) of the clients' cgroups (memory hierarchy)."""
    groups = glob.glob(f"/sys/fs/cgroup/memory/heketi-csi/{DRIVER}/stage-*")
    return len(groups), sum(int(Path(g, "memory.usage_in_bytes").read_text()) for g in groups)


async def memory(cluster: Cluster, volumes: int) -> None:
    idle = rss_bytes(node_process())
    names = [f"v{i:03d}" for i in range(volumes)]
    for name in names:
        await cluster.claim(name)
    for name in names:
        await cluster.bound(name)
    started = time.monotonic()
    await cluster.pod("many", names, "sleep 100000")
    staged = time.monotonic() - started
    pid = node_process()
    groups, charged = client_memory()
    print(f"node plugin RSS {format_bytes(idle)} with 1 volume (API client loaded if it "
          f"repaired a volume above); {format_bytes(rss_bytes(pid))} "
          f"with {volumes + 1} staged and published (pod running {staged:.0f} s after "
          f"create); the {groups} clients' own cgroups: {format_bytes(charged)} "
          f"({format_bytes(charged / max(1, groups))} each), outside the node container")


async def main(args: argparse.Namespace) -> None:
    await config.load_kube_config(config_file=str(KUBECONFIG))
    async with ApiClient() as api:
        cluster = Cluster(api)
        await cluster.core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": NAMESPACE}})
        try:
            await cluster.claim("data")
            pv = await cluster.bound("data")
            await cluster.pod("writer", ["data"], WRITER)
            staging = staging_of(pv)
            if args.restarts:
                await survival(cluster, staging, args.restarts)
            if args.deaths:
                await recovery(cluster, staging, args.deaths)
            if args.volumes:
                await memory(cluster, args.volumes)
        finally:
            pvs = [pv.metadata.name for pv in (await cluster.core.list_persistent_volume()).items
                   if pv.spec.claim_ref and pv.spec.claim_ref.namespace == NAMESPACE]
            await cluster.core.delete_namespace(NAMESPACE)
            await until("the namespace to go", lambda: _gone(cluster.core.read_namespace,
                                                             NAMESPACE), 600, 1)
            for name in pvs:
                await until(f"PV {name} to go", lambda name=name: _gone(
                    cluster.core.read_persistent_volume, name), 600, 1)


async def _gone(read: Any, name: str) -> bool:
    try:
        await read(name)
    except ApiException as exc:
        return exc.status == 404
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--deaths", type=int, default=10)
    parser.add_argument("--volumes", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
