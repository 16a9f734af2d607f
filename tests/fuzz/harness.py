"""The cluster the fuzz suite drives, what it plants in it, and how one request is sent.

`FuzzSession.start()` starts a `LocalCluster` of its own (controller and node with debug logs
and a metrics port), a honeypot TCP listener, a sandbox directory next to the kubelet root
(`<base>/outside`) and symlinks inside the kubelet root that lead into it. The simulator keeps
its volumes in memory (every storage host is this host), so the controller's work costs no
gluster transaction and a call's time is the driver's own; two real gluster volumes give
the node something to mount. Two controller volumes are the fixtures: the first is staged
(on the first real volume) and published. `send()` runs one request and records every
finding; a process that crashed or stopped answering is restarted so the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from devtools import glusterd
from devtools.csi_client import GIB, CsiClient
from devtools.heketi_sim.latency import INSTANT
from devtools.localcluster import BackgroundCluster, LocalCluster
from devtools.localcluster.processes import free_port, probe
from devtools.localcluster.teardown import (
    TeardownReport,
    gluster_volumes_with_bricks_under,
    mounts_under,
)
from services.common.proto import csi_grpc, csi_pb2
from services.controller.heketi import HeketiClient
from services.node import mountinfo
from tests.fuzz.messages import FuzzRequest, Rpc
from tests.fuzz.oracle import SLOW_S, Finding, Observer, Outcome, clip
from tests.fuzz.values import World

CALL_TIMEOUT = SLOW_S + 1.0
STUBS: dict[str, Callable[[Channel], object]] = {
    "Identity": csi_grpc.IdentityStub, "Controller": csi_grpc.ControllerStub,
    "Node": csi_grpc.NodeStub}
# After a slow call or a broken connection with one of these, stop sending that RPC such
# inputs: one finding says it, and each repeat would cost seconds.
COSTLY_TAGS = ("huge", "1000-entries", "many-entries")


class Honeypot:
    """A TCP listener that counts connections: ids naming its URL must never reach it."""

    def __init__(self) -> None:
        self.hits = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def plant(kubelet: Path, sandbox: Path, driver: str) -> list[tuple[str, str]]:
    """Directories outside the kubelet root and symlinks inside it that lead there.

    Returns (path a request may name, tag) for each hostile path."""
    for sub in ("existing", "t1", "p1/volumes/kubernetes.io~csi/pv", "s1", "s2", "r1",
                "inside-real"):
        (sandbox / sub).mkdir(parents=True, exist_ok=True)
    (sandbox / "afile").write_text("outside\n")
    pods = kubelet / "pods"
    stage = kubelet / "plugins" / "kubernetes.io" / "csi" / driver
    (pods / "evil-target" / "volumes" / "kubernetes.io~csi" / "pv").mkdir(parents=True)
    (pods / "file-link").mkdir(parents=True)
    (pods / "inside-real").mkdir(parents=True)
    (stage / "evil-self").mkdir(parents=True)
    links = [  # (link, points to, path to use, tag)
        (pods / "evil-target/volumes/kubernetes.io~csi/pv/mount", sandbox / "t1", None,
         "symlink-target->outside"),
        (pods / "evil-parent", sandbox / "p1", "volumes/kubernetes.io~csi/pv/mount",
         "symlinked-parent->outside"),
        (pods / "dangling", sandbox / "not-yet", "volumes/pv/mount",
         "dangling-symlink-parent->outside"),
        (pods / "dangling-self", sandbox / "not-yet-2", None,
         "dangling-symlink-target->outside"),
        (pods / "file-link/mount", sandbox / "afile", None, "symlink-to-file-outside"),
        (pods / "loop", pods / "loop", "mount", "symlink-loop"),
        (pods / "rel", Path(os.path.relpath(sandbox / "r1", pods)), "mount",
         "relative-symlink->outside"),
        (pods / "inside-link", pods / "inside-real", "mount", "symlink-inside-root"),
        (stage / "evil-stage", sandbox / "s1", "globalmount",
         "symlinked-staging-parent->outside"),
        (stage / "evil-self/globalmount", sandbox / "s2", None, "symlink-staging->outside"),
        (kubelet / "evil-root-link", sandbox, "pods/x/mount", "symlinked-subtree->outside"),
    ]
    planted = []
    for link, to, below, tag in links:
        link.symlink_to(to)
        planted.append((str(link / below) if below else str(link), tag))
    return planted


class FuzzSession:
    def __init__(self, runner: BackgroundCluster, cluster: LocalCluster, world: World,
                 honeypot: Honeypot, metrics: dict[str, str]) -> None:
        self.runner = runner
        self.cluster = cluster
        self.world = world
        self.honeypot = honeypot
        self.metrics = metrics
        self.channels: dict[str, Channel] = {}
        self.observer = Observer(world, cluster.base_dir,
                                 [cluster.log_dir, cluster.gluster_log_dir])
        self.findings: list[Finding] = []
        self.quarantined: set[str] = set()
        self.sent = 0
        self.skipped = 0
        self.seconds: dict[str, float] = {}  # slowest answer per RPC
        self.codes: Counter[str] = Counter()  # answers by gRPC code
        self.bricks = Path()  # the real gluster volumes' bricks

    # --- life ---------------------------------------------------------------------------------
    @classmethod
    def start(cls) -> FuzzSession:
        ports = {"controller": free_port(), "node": free_port()}
        runner = BackgroundCluster(
            # memory: the fuzzer makes its own gluster volumes on this host (self.bricks)
            storage="memory", sim_args=["--storage-host", glusterd.hostname()],
            heketi_op_latency=INSTANT,
            controller_args=["--metrics-port", str(ports["controller"]), "--log-level", "debug"],
            node_args=["--metrics-port", str(ports["node"]), "--log-level", "debug"],
            keep_logs=bool(os.environ.get("HCSI_FUZZ_KEEP_LOGS")))
        cluster = runner.start()
        bricks = Path(tempfile.mkdtemp(prefix="hcsi-fuzz-bricks-"))
        try:
            honeypot = Honeypot()
            world = World(
                kubelet_root=cluster.kubelet_root, sandbox=cluster.base_dir / "outside",
                node_id=cluster.node_id, sim_url=cluster.heketi_url,
                honeypot_url=runner.call(honeypot.start()),
                marker="FZSECRET" + secrets.token_hex(6), hostname=socket.gethostname())
            world.planted = plant(cluster.kubelet_root, world.sandbox, cluster.driver_name)
            world.staging_pool = [str(cluster.staging_path(f"fuzz-stage-{i}")) for i in range(3)]
            world.target_pool = [str(cluster.pod_target_path(f"fuzz-pod-{i}", "pv-fuzz"))
                                 for i in range(4)]
            runner.call(_fixtures(cluster, world, bricks))
            metrics = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
            if cluster.registrar_health_url:
                metrics["registrar"] = cluster.registrar_health_url.replace("/healthz",
                                                                            "/metrics")
            session = cls(runner, cluster, world, honeypot, metrics)
            session.bricks = bricks
            return session
        except BaseException:
            runner.stop()
            asyncio.run(_delete_gluster_volumes(bricks))
            raise

    def stop(self) -> TeardownReport | None:
        async def close() -> None:
            for channel in self.channels.values():
                channel.close()
            await self.honeypot.close()

        with contextlib.suppress(Exception):
            self.runner.call(close())
        report = self.runner.stop()  # unmounts everything in the cluster's directory first
        problems = asyncio.run(_delete_gluster_volumes(self.bricks))
        if not mounts_under(self.world.sandbox):  # left when the cluster keeps its logs
            shutil.rmtree(self.world.sandbox, ignore_errors=True)
        if report is not None:
            report.problems += problems
        return report

    # --- one request --------------------------------------------------------------------------
    def send(self, request: FuzzRequest, seed: int, index: int) -> None:
        rpc = request.rpc
        if rpc.label in self.quarantined and any(t in x for x in request.tags
                                                 for t in COSTLY_TAGS):
            self.skipped += 1
            return
        if rpc.method == "NodePublishVolume":
            self.runner.call(self._keep_fixture_staged())
        outcome = self.runner.call(self._call(rpc, request.message), timeout=120)
        self.sent += 1
        self.codes[outcome.code] += 1
        self.seconds[rpc.label] = max(self.seconds.get(rpc.label, 0.0), outcome.seconds)
        dead = [p.name for p in self.cluster.dead_processes()]
        problems = self.observer.after(outcome, self.honeypot.hits, dead)
        for kind, detail in problems:
            self.findings.append(Finding(kind, rpc.label, seed, index,
                                         request.hostile_fields(), detail))
        if any(k in ("slow", "transport", "crash") for k, _ in problems):
            self.quarantined.add(rpc.label)
            self.runner.call(self._recover(rpc))
        if outcome.code == "OK":
            self._learn(rpc, request.message, outcome.reply)

    async def _call(self, rpc: Rpc, message: Message) -> Outcome:
        channel = self._channel(rpc.socket)
        method = getattr(STUBS[rpc.service](channel), rpc.method)
        start = time.monotonic()
        try:
            reply = await method(message, timeout=CALL_TIMEOUT)
        except GRPCError as exc:
            text = f"{exc.message or ''} {exc.details or ''}"
            return Outcome(exc.status.name, text, time.monotonic() - start)
        except TimeoutError as exc:
            return Outcome("TIMEOUT", f"no answer within {CALL_TIMEOUT:g} s ({exc!r})",
                           time.monotonic() - start)
        except Exception as exc:  # a broken stream or connection: the finding says which
            self._drop_channel(rpc.socket)
            return Outcome("TRANSPORT", f"{type(exc).__name__}: {exc}",
                           time.monotonic() - start)
        seconds = time.monotonic() - start
        return Outcome("OK", "", seconds, str(reply), reply)

    def _channel(self, name: str) -> Channel:
        if name not in self.channels:
            sock = self.cluster.controller_socket if name == "controller" else \
                self.cluster.node_socket
            self.channels[name] = Channel(path=str(sock))
        return self.channels[name]

    def _drop_channel(self, name: str) -> None:
        channel = self.channels.pop(name, None)
        if channel is not None:
            channel.close()

    async def _recover(self, rpc: Rpc) -> None:
        """Restart a dead process, or one that no longer answers Probe within 2 s (not the
        simulator: it would come back empty, on another port)."""
        for name in ("controller", "node", "registrar", "kubelet-sim"):
            proc = self.cluster.processes.get(name)
            if proc is None:
                continue
            stuck = name == rpc.socket and not await probe(
                self.cluster.controller_socket if name == "controller"
                else self.cluster.node_socket)
            if not proc.running or stuck:
                self._drop_channel(name)
                await self.cluster.restart(name, kill=True)

    async def _keep_fixture_staged(self) -> None:
        """NodePublish needs a staged volume to reach its interesting part."""
        staging = self.world.staging_pool[0]
        if any(m.mount_point == staging for m in mountinfo.read()):
            return
        with contextlib.suppress(GRPCError, TimeoutError):
            async with CsiClient(self.cluster.node_socket, timeout=30) as node:
                await node.stage(self.world.fixtures[0], staging,
                                 volume_context=self.world.mountable[0])
        self.observer.read_logs()

    def _learn(self, rpc: Rpc, message: Message, reply: Message | None) -> None:
        """Keep the world's ids current: later requests name what exists."""
        world = self.world
        if isinstance(reply, csi_pb2.CreateVolumeResponse) and reply.volume.volume_id:
            world.volumes.setdefault(reply.volume.volume_id, dict(reply.volume.volume_context))
        elif isinstance(reply, csi_pb2.CreateSnapshotResponse) and reply.snapshot.snapshot_id:
            if reply.snapshot.snapshot_id not in world.snapshots:
                world.snapshots.append(reply.snapshot.snapshot_id)
        elif isinstance(message, csi_pb2.DeleteVolumeRequest):
            if message.volume_id not in world.protected:
                world.volumes.pop(message.volume_id, None)
        elif isinstance(message, csi_pb2.DeleteSnapshotRequest) and \
                message.snapshot_id in world.snapshots:
            world.snapshots.remove(message.snapshot_id)

    # --- end of a run -------------------------------------------------------------------------
    def final_checks(self, seed: int) -> None:
        async def scrape() -> dict[str, str]:
            texts = {}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                for name, url in self.metrics.items():
                    try:
                        async with http.get(url) as reply:
                            texts[name] = await reply.text()
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.findings.append(Finding("metrics-unreachable", name, seed, -1,
                                                     "-", f"{url}: {exc!r}"))
            return texts

        for name, text in self.runner.call(scrape()).items():
            for kind, detail in self.observer.metrics(name, text):
                self.findings.append(Finding(kind, name, seed, -1, "-", detail))
        for path, line in self.observer.read_logs():
            self.findings.append(Finding("secret-in-log", "-", seed, -1, "-",
                                         f"{path.name}: {clip(line)}"))


async def _fixtures(cluster: LocalCluster, world: World, bricks: Path) -> None:
    """Two controller volumes (never deleted by the fuzz) and two real gluster volumes; the
    first controller volume is staged on the first gluster volume and published."""
    async with CsiClient(cluster.controller_socket) as ctl:
        for name in ("fuzz-fixture-a", "fuzz-fixture-b"):
            volume = await ctl.create_volume(name, GIB)
            world.volumes[volume.volume_id] = dict(volume.volume_context)
            world.protected.add(volume.volume_id)
            world.fixtures.append(volume.volume_id)
    await asyncio.to_thread(glusterd.ensure_glusterd)
    names = [f"fuzzfix_{secrets.token_hex(4)}_{i}" for i in range(2)]
    for name in names:
        await glusterd.create_volume(name, bricks)
        world.mountable.append({"volume": name, "hosts": glusterd.hostname()})
    first, staging = world.fixtures[0], world.staging_pool[0]
    async with CsiClient(cluster.node_socket) as node:
        await node.stage(first, staging, volume_context=world.mountable[0])
        await node.publish(first, staging, world.target_pool[0])
    async with HeketiClient(cluster.heketi_url, "admin", cluster.admin_key) as heketi:
        world.cluster_ids = await heketi.list_cluster_ids()


async def _delete_gluster_volumes(bricks: Path) -> list[str]:
    """Delete the gluster volumes with bricks under `bricks`, then the directory; return
    what could not be done."""
    problems = []
    try:
        for name in await gluster_volumes_with_bricks_under(bricks):
            try:
                await glusterd.delete_volume(name)
            except glusterd.GlusterError as exc:
                problems.append(f"deleting gluster volume {name}: {exc}")
    except RuntimeError as exc:
        problems.append(f"listing gluster volumes: {exc}")
    if not problems:
        await asyncio.to_thread(shutil.rmtree, bricks, True)
    return problems
