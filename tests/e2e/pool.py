"""The local cluster's GlusterFS pool as the real-cluster tests see it: its servers, the
bricks of a volume and the files on them, the controller's CSI socket for the volume
condition, and a writer pod whose every write is timed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devtools.gluster_pool import GlusterPool
from devtools.k8s import storage_pool
from tests.e2e.conftest import Cluster
from tests.e2e.kube import DRIVER_NAMESPACE, Kube

# The class with the options operators run (k8s/examples/classes/storageclass-replica3.yaml):
# client and server quorum, network.ping-timeout 10.
REPLICA3_CLASS = "glusterfs-csi-replica3"
PING_TIMEOUT = 10.0
CONTROLLER_POD = "heketi-csi-controller-0"
KUBELET = "/var/lib/kubelet"

# Appends the next number to /data/counter every 100 ms, each write fsync'ed, and logs each
# attempt as devtools/gluster_pool/writer.py does (`OK N START SECONDS` or `ERR N START
# SECONDS`, read by its parse_attempts), START on the machine's boot clock (/proc/uptime:
# the same in every pod and on the host; boot_clock() below).
TIMED_COUNTER = (
    "i=0; echo start; while true; do i=$((i+1)); t0=$(cut -d' ' -f1 /proc/uptime); "
    "if echo $i | dd of=/data/counter oflag=append conv=notrunc,fsync 2>/dev/null; "
    "then r=OK; else r=ERR; fi; t1=$(cut -d' ' -f1 /proc/uptime); "
    "echo $r $i $t0 $(awk -v a=$t0 -v b=$t1 'BEGIN { printf \"%.2f\", b - a }'); "
    "sleep 0.1; done"
)


def need_pool(cluster: Cluster) -> GlusterPool:
    """The cluster's pool, which only the local cluster has (its servers are processes of
    this machine that the tests stop, kill and cut off)."""
    if not cluster.local:
        pytest.fail("needs the local cluster and its gluster pool (`make k8s-up`): the tests "
                    "power off and partition its servers", pytrace=False)
    pool = storage_pool.pool()
    if pool.running() != pool.indexes:
        pytest.fail(f"the local cluster's gluster pool is not wholly up: servers running "
                    f"{pool.running()} of {pool.indexes}", pytrace=False)
    return pool


def boot_clock() -> float:
    """Now on the clock of /proc/uptime (CLOCK_BOOTTIME), as the writer logs it."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def gluster_volume(pv: Any) -> str:
    return str(pv.spec.csi.volume_attributes["volume"])


def first_server(pool: GlusterPool, pv: Any) -> int:
    """The server a mount of the volume asks for its volfile first (the context's first
    host)."""
    return pool.index_of(pv.spec.csi.volume_attributes["hosts"].split(",")[0])


async def brick_files(pool: GlusterPool, volume: str, relative: str) -> dict[int, Path]:
    """`relative` on each brick of `volume`, by server, as each server sees it."""
    pool.reload()
    info = await pool.volume_info(volume)
    out = {}
    for brick in info.bricks:
        index = pool.index_of(brick.host)
        out[index] = Path(f"/proc/{pool.server_pid(index)}/root{brick.path}") / relative
    return out


async def read_bricks(pool: GlusterPool, volume: str, relative: str) -> dict[int, bytes]:
    files = await brick_files(pool, volume, relative)
    return {i: await asyncio.to_thread(p.read_bytes) for i, p in files.items()}


@contextlib.asynccontextmanager
async def controller_socket(kube: Kube) -> AsyncIterator[str]:
    """The controller's CSI socket, in its pod's emptyDir on this node, through a short
    link: the socket's own path is longer than a unix socket address may be (108 bytes)."""
    pod = await kube.core.read_namespaced_pod(CONTROLLER_POD, DRIVER_NAMESPACE)
    socket_dir = f"{KUBELET}/pods/{pod.metadata.uid}/volumes/kubernetes.io~empty-dir/socket-dir"
    short = Path(tempfile.mkdtemp(prefix="hcsi-ctl-"))
    try:
        (short / "d").symlink_to(socket_dir)
        yield str(short / "d" / "csi.sock")
    finally:
        shutil.rmtree(short)


def volume_id(pv: Any) -> str:
    return str(pv.spec.csi.volume_handle)


async def node_plugin_log(kube: Kube, since_seconds: int) -> list[dict[str, Any]]:
    """The node plugin's JSON log lines of the last `since_seconds` (other lines skipped)."""
    pods = await kube.core.list_namespaced_pod(
        DRIVER_NAMESPACE, label_selector="app.kubernetes.io/name=heketi-csi-node")
    out = []
    for pod in pods.items:
        text = await kube.core.read_namespaced_pod_log(
            pod.metadata.name, DRIVER_NAMESPACE, container="heketi-csi-node",
            since_seconds=since_seconds)
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
    return out
