"""`make demo`: a PVC's whole life on the local cluster, called the way Kubernetes calls it.

The demo brings a LocalCluster up and plays, over the driver's real sockets, what
external-provisioner, external-attacher, kubelet, external-resizer and external-snapshotter
would do: create a 1 GiB volume, attach it, stage it, publish it into two pods, write in one
pod and read in the other, expand it to 2 GiB, snapshot it, change the data, restore the
snapshot into a new volume and read the old data there, then unpublish, unstage and delete
everything. Each step prints one line with its outcome and duration.

Every step must succeed: one that fails, an RPC that answers UNIMPLEMENTED included, prints a
`[FAIL]` line naming the RPC and its answer and ends the demo with exit code 1 after cleaning
up what the earlier steps made. At the
end it checks that nothing is left: no mounts under the cluster's directory, no gluster
volume with a brick there, and (after the teardown) no directory either.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO, TypeVar

from grpclib.exceptions import GRPCError

from devtools.csi_client import GIB, CsiClient, is_unimplemented
from devtools.gluster_pool.pool import VolumeInfo
from devtools.heketi_sim.latency import add_latency_options
from devtools.localcluster import (
    ClusterError,
    KubeletPaths,
    LocalCluster,
    gluster_volumes_with_bricks_under,
    mounts_under,
)
from devtools.localcluster.__main__ import add_storage_options, pool_config
from services.common.proto import csi_pb2

T = TypeVar("T")

SPINNER = "|/-\\"
# Without a terminal, a step that waits this long prints a "still waiting" line now and then.
QUIET_PROGRESS_EVERY = 5.0
FILE_IO_TIMEOUT = 30.0
DATA_FILE = "greeting.txt"
NOTE_WIDTH = 90


class DemoFailed(Exception):
    """A step failed (an RPC the driver does not implement included)."""

    def __init__(self, title: str, cause: BaseException) -> None:
        super().__init__(f"{title}: {describe_error(cause)}")
        self.title = title
        self.cause = cause


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, GRPCError):
        return f"{exc.status.name}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def human_bytes(value: int) -> str:
    if value >= GIB:
        return f"{value / GIB:.2f} GiB".replace(".00 GiB", " GiB")
    return f"{value / (1 << 20):.1f} MiB"


class Reporter:
    """Prints one line per step; shows progress while a step runs."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.number = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def line(self, mark: str, title: str, seconds: float | None, detail: str = "") -> None:
        took = f"{seconds:6.2f} s" if seconds is not None else " " * 8
        text = f"[{mark}] {title:<58} {took}"
        if detail:
            text += f"  {detail}"
        if self.tty:
            self._write("\r\x1b[K")
        self._write(text + "\n")

    def rows(self, rows: Sequence[str]) -> None:
        """Indented lines under a step, not wrapped (paths stay whole)."""
        for row in rows:
            self._write(f"         {row}\n")

    def note(self, text: str) -> None:
        for paragraph in text.splitlines():
            for row in textwrap.wrap(paragraph, NOTE_WIDTH):
                self._write(f"         {row}\n")

    async def _progress(self, title: str, started: float) -> None:
        if self.tty:
            frame = 0
            while True:
                elapsed = time.monotonic() - started
                self._write(f"\r\x1b[K[ {SPINNER[frame % len(SPINNER)]}  ] {title:<58} "
                            f"{elapsed:6.1f} s")
                frame += 1
                await asyncio.sleep(0.1)
        else:
            while True:
                await asyncio.sleep(QUIET_PROGRESS_EVERY)
                elapsed = time.monotonic() - started
                self._write(f"[ .. ] {title}: still waiting ({elapsed:.0f} s)\n")

    async def timed(self, title: str, action: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        started = time.monotonic()
        ticker = asyncio.create_task(self._progress(title, started))
        try:
            result = await action()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        return result, time.monotonic() - started


@dataclass
class Undo:
    title: str
    action: Callable[[], Awaitable[object]]
    needs: tuple[str, ...] = ()


class Target(Protocol):
    """What the demo needs of the driver it plays against."""

    @property
    def node_id(self) -> str: ...

    @property
    def kubelet_root(self) -> Path: ...

    def staging_path(self, volume_id: str) -> Path: ...

    def pod_target_path(self, pod_uid: str, pv_name: str) -> Path: ...

    async def leftovers(self) -> list[str]: ...

    async def volume_layout(self, volume: str) -> VolumeInfo | None:
        """The gluster volume's type and bricks as gluster reports them (None: not known
        here)."""
        ...


@dataclass
class RunningDriver:
    """A driver started elsewhere (the docker-compose stack): the demo only talks to it."""

    node_id: str
    paths: KubeletPaths

    @property
    def kubelet_root(self) -> Path:
        return self.paths.kubelet_root

    def staging_path(self, volume_id: str) -> Path:
        return self.paths.staging_path(volume_id)

    def pod_target_path(self, pod_uid: str, pv_name: str) -> Path:
        return self.paths.pod_target_path(pod_uid, pv_name)

    async def leftovers(self) -> list[str]:
        roots = [self.kubelet_root / "pods", self.kubelet_root / "plugins" / "kubernetes.io"]
        return [f"mount {m.mount_point}" for root in roots for m in mounts_under(root)]

    async def volume_layout(self, volume: str) -> VolumeInfo | None:
        return None  # the storage is the stack's, out of this process's sight


@dataclass
class Demo:
    """Runs the steps against a started cluster; keeps what must be undone."""

    cluster: Target
    csi_controller: CsiClient
    csi_node: CsiClient
    report: Reporter
    done: set[str] = field(default_factory=set)
    not_built: list[str] = field(default_factory=list)
    undo: list[Undo] = field(default_factory=list)

    async def step(self, key: str, title: str, action: Callable[[], Awaitable[T]], *,
                   needs: Sequence[str] = (),
                   detail: Callable[[T], str] | None = None) -> T:
        """Run one step and return its result; raises DemoFailed when it fails, when the
        driver does not implement its RPC, or when a step it needs did not succeed."""
        self.report.number += 1
        title = f"{self.report.number:>2}. {title}"
        missing = [n for n in needs if n not in self.done]
        if missing:
            problem = RuntimeError(f"needs {', '.join(missing)}, which did not succeed")
            self.report.line("FAIL", title, None, str(problem))
            raise DemoFailed(title, problem)
        try:
            result, seconds = await self.report.timed(title, action)
        except GRPCError as exc:
            if is_unimplemented(exc):
                self.not_built.append(key)
                self.report.line("FAIL", title, None,
                                 f"{describe_error(exc)} (the driver does not implement this "
                                 "step's RPC; every step must work)")
            else:
                self.report.line("FAIL", title, None, describe_error(exc))
            raise DemoFailed(title, exc) from exc
        except Exception as exc:
            self.report.line("FAIL", title, None, describe_error(exc))
            raise DemoFailed(title, exc) from exc
        self.done.add(key)
        self.report.line(" ok ", title, seconds, detail(result) if detail else "")
        return result

    def later(self, title: str, action: Callable[[], Awaitable[object]],
              needs: Sequence[str] = ()) -> None:
        self.undo.append(Undo(title, action, tuple(needs)))

    async def unwind(self) -> None:
        """Run the undo steps, newest first. Raises DemoFailed after running all of them if
        any failed."""
        first: DemoFailed | None = None
        while self.undo:
            item = self.undo.pop()
            try:
                await self.step("undo", item.title, item.action, needs=item.needs)
            except DemoFailed as exc:
                first = first or exc
        if first is not None:
            raise first


# --- file access in the pods (off the loop: a FUSE mount can hang) ---------------------------
async def write_file(path: Path, text: str) -> None:
    await asyncio.wait_for(asyncio.to_thread(path.write_text, text), FILE_IO_TIMEOUT)


async def read_file(path: Path) -> str:
    return await asyncio.wait_for(asyncio.to_thread(path.read_text), FILE_IO_TIMEOUT)


async def read_expecting(path: Path, expected: str) -> str:
    text = await read_file(path)
    if text != expected:
        raise AssertionError(f"read {text!r}, expected {expected!r}")
    return text


async def statvfs(path: Path) -> os.statvfs_result:
    return await asyncio.wait_for(asyncio.to_thread(os.statvfs, path), FILE_IO_TIMEOUT)


def _stats_total(stats: csi_pb2.NodeGetVolumeStatsResponse) -> int | None:
    for usage in stats.usage:
        if usage.unit == csi_pb2.VolumeUsage.BYTES:
            return int(usage.total)
    return None


# --- the play ----------------------------------------------------------------------------------
async def play(demo: Demo) -> None:
    cluster, ctl, node = demo.cluster, demo.csi_controller, demo.csi_node
    uid = uuid.uuid4().hex[:8]
    pv = f"pvc-{uid}"
    staging = ""
    pods = {name: cluster.pod_target_path(f"{name}-{uid}", pv) for name in ("pod-a", "pod-b")}

    # 1. external-provisioner: CreateVolume for the PVC.
    volume = await demo.step(
        "create", f"CreateVolume {pv} (1 GiB)", lambda: ctl.create_volume(pv, GIB),
        detail=lambda v: f"{human_bytes(v.capacity_bytes)}, id {v.volume_id}")
    volume_id = volume.volume_id
    context = dict(volume.volume_context)
    demo.later(f"DeleteVolume {pv}", lambda: ctl.delete_volume(volume_id))
    await show_bricks(demo, context.get("volume", ""))

    # 2. external-attacher: ControllerPublishVolume to this node.
    publish_context = await demo.step(
        "attach", f"ControllerPublishVolume to node {cluster.node_id}",
        lambda: ctl.controller_publish(volume_id, cluster.node_id),
        detail=lambda c: ", ".join(f"{k}={v}" for k, v in sorted(c.items())))
    demo.later("ControllerUnpublishVolume",
               lambda: ctl.controller_unpublish(volume_id, cluster.node_id))

    # 3. kubelet: NodeStageVolume (one FUSE mount per node) ...
    staging_path = cluster.staging_path(volume_id)
    staging = str(staging_path)
    await demo.step(
        "stage", "NodeStageVolume (FUSE mount at globalmount)",
        lambda: node.stage(volume_id, staging_path, volume_context=context,
                           publish_context=publish_context),
        detail=lambda _: str(staging_path.relative_to(cluster.kubelet_root)))
    demo.later("NodeUnstageVolume", lambda: node.unstage(volume_id, staging_path))

    # 4. ... and NodePublishVolume for each pod (bind mounts).
    async def publish_into(name: str, target: Path) -> None:
        await demo.step(
            f"publish-{name}", f"NodePublishVolume into {name}",
            lambda: node.publish(volume_id, staging_path, target, volume_context=context,
                                 publish_context=publish_context),
            needs=["stage"], detail=lambda _: str(target.relative_to(cluster.kubelet_root)))
        demo.later(f"NodeUnpublishVolume from {name}", lambda: node.unpublish(volume_id, target))

    for name, target in pods.items():
        await publish_into(name, target)
    both = ["publish-pod-a", "publish-pod-b"]

    # 5. The pods share the data.
    original = f"hello from pod-a ({time.strftime('%H:%M:%S')})"
    await demo.step("write", f"pod-a writes {DATA_FILE}",
                    lambda: write_file(pods["pod-a"] / DATA_FILE, original),
                    needs=both, detail=lambda _: repr(original))
    await demo.step("read", f"pod-b reads {DATA_FILE}",
                    lambda: read_expecting(pods["pod-b"] / DATA_FILE, original),
                    needs=["write"], detail=lambda text: f"{text!r}: the same")

    # 6. external-resizer: ControllerExpandVolume to 2 GiB (then kubelet's NodeExpandVolume).
    expanded = await demo.step(
        "expand", "ControllerExpandVolume to 2 GiB",
        lambda: ctl.expand_volume(volume_id, 2 * GIB),
        detail=lambda r: f"capacity {human_bytes(r.capacity_bytes)}, node expansion "
                         f"{'required' if r.node_expansion_required else 'not required'}")
    if expanded.node_expansion_required:
        await demo.step("node-expand", "NodeExpandVolume",
                        lambda: node.node_expand(volume_id, pods["pod-a"], 2 * GIB, staging),
                        needs=["publish-pod-a"])
    await show_sizes(demo, volume_id, pods["pod-a"])

    # 7. external-snapshotter: CreateSnapshot.
    snap_name = f"snapshot-{uid}"
    snapshot = await demo.step(
        "snapshot", f"CreateSnapshot {snap_name}",
        lambda: ctl.create_snapshot(snap_name, volume_id),
        detail=lambda s: f"{human_bytes(s.size_bytes)}, ready {s.ready_to_use}, "
                         f"id {s.snapshot_id}")
    snapshot_id = snapshot.snapshot_id
    demo.later(f"DeleteSnapshot {snap_name}", lambda: ctl.delete_snapshot(snapshot_id))

    # 8. The data changes after the snapshot.
    changed = f"changed by pod-a after the snapshot ({time.strftime('%H:%M:%S')})"
    await demo.step("change", "pod-a overwrites the file after the snapshot",
                    lambda: write_file(pods["pod-a"] / DATA_FILE, changed),
                    needs=["snapshot", "write"], detail=lambda _: repr(changed))

    # 9. A new PVC with dataSource: the snapshot.
    restored_pv = f"pvc-{uuid.uuid4().hex[:8]}"
    size = max(snapshot.size_bytes, GIB)
    restored = await demo.step(
        "restore", f"CreateVolume {restored_pv} from the snapshot",
        lambda: ctl.create_volume(restored_pv, size, from_snapshot=snapshot.snapshot_id),
        detail=lambda v: f"{human_bytes(v.capacity_bytes)}, id {v.volume_id}")
    await read_restored(demo, restored, restored_pv, uid, original)


def describe_layout(info: VolumeInfo) -> str:
    kind = info.type
    if info.replica > 1:
        kind += f", replica {info.replica}" + (f" arbiter {info.arbiter}" if info.arbiter else "")
    servers = {b.host for b in info.bricks}
    return f"{kind}: {len(info.bricks)} bricks on {len(servers)} servers"


async def show_bricks(demo: Demo, volume: str) -> None:
    """Where the new volume's bricks are, as gluster itself says (pool mode)."""
    layout = await demo.cluster.volume_layout(volume)
    if layout is None:
        return
    info = await demo.step("bricks", f"gluster volume info {volume} (where the bricks are)",
                           lambda: _layout_of(demo, volume), detail=describe_layout)
    demo.report.rows([f"brick {n} on server {b.host}: {b.path}"
                      for n, b in enumerate(info.bricks, 1)])


async def _layout_of(demo: Demo, volume: str) -> VolumeInfo:
    layout = await demo.cluster.volume_layout(volume)
    if layout is None:
        raise RuntimeError(f"gluster does not know volume {volume}")
    return layout


async def show_sizes(demo: Demo, volume_id: str, pod_path: Path) -> None:
    """What Heketi/the controller says, and what the filesystem in the pod says."""
    ctl, node = demo.csi_controller, demo.csi_node
    got = await demo.step("get-volume", "ControllerGetVolume (size as Heketi records it)",
                          lambda: ctl.get_volume(volume_id),
                          detail=lambda r: human_bytes(r.volume.capacity_bytes))
    stats = await demo.step("stats", "NodeGetVolumeStats in pod-a",
                            lambda: node.volume_stats(volume_id, pod_path),
                            needs=["publish-pod-a"],
                            detail=lambda s: f"total {human_bytes(_stats_total(s) or 0)}")
    fs = await demo.step("statfs", "statfs() in pod-a", lambda: statvfs(pod_path),
                         needs=["publish-pod-a"],
                         detail=lambda s: f"total {human_bytes(s.f_blocks * s.f_frsize)}")
    heketi = human_bytes(got.volume.capacity_bytes)
    lines = [f"Heketi (through the controller) says the volume has {heketi}."]
    total = human_bytes(fs.f_blocks * fs.f_frsize)
    node_total = _stats_total(stats)
    lines.append(f"statfs in the pod says {total}"
                 + (f" (NodeGetVolumeStats: {human_bytes(node_total)})"
                    if node_total is not None else "") + ".")
    lines.append("Each simulated brick is an XFS file system of the volume's size, as on a "
                 "real Heketi (an LV per brick), so statfs shows the volume's size less XFS's "
                 "own log and metadata.")
    demo.report.note("\n".join(lines))


async def read_restored(demo: Demo, restored: csi_pb2.Volume, pv: str, uid: str,
                        original: str) -> None:
    """Mount the restored volume in a third pod and show that it holds the old data."""
    cluster, ctl, node = demo.cluster, demo.csi_controller, demo.csi_node
    restored_id = restored.volume_id
    context = dict(restored.volume_context)
    demo.later(f"DeleteVolume {pv}", lambda: ctl.delete_volume(restored_id))
    publish_context = await demo.step(
        "attach-restored", "ControllerPublishVolume (restored volume)",
        lambda: ctl.controller_publish(restored_id, cluster.node_id))
    demo.later("ControllerUnpublishVolume (restored volume)",
               lambda: ctl.controller_unpublish(restored_id, cluster.node_id))
    staging = cluster.staging_path(restored_id)
    await demo.step("stage-restored", "NodeStageVolume (restored volume)",
                    lambda: node.stage(restored_id, staging, volume_context=context,
                                       publish_context=publish_context),
                    needs=["stage"])
    demo.later("NodeUnstageVolume (restored volume)", lambda: node.unstage(restored_id, staging))
    target = cluster.pod_target_path(f"pod-c-{uid}", pv)
    await demo.step("publish-restored", "NodePublishVolume into pod-c",
                    lambda: node.publish(restored_id, staging, target, volume_context=context,
                                         publish_context=publish_context))
    demo.later("NodeUnpublishVolume from pod-c", lambda: node.unpublish(restored_id, target))
    await demo.step("read-restored", f"pod-c reads {DATA_FILE} (restored volume)",
                    lambda: read_expecting(target / DATA_FILE, original),
                    needs=["write"], detail=repr)
    demo.report.note("The restored volume holds the data as it was at the snapshot, not "
                     "the change made after it.")


# --- the run -----------------------------------------------------------------------------------
async def play_and_unwind(demo: Demo) -> DemoFailed | None:
    """Play the steps, then undo what they made (also after a failure); the first failure."""
    failure: DemoFailed | None = None
    try:
        await play(demo)
    except DemoFailed as exc:
        failure = exc
        print("\nA step failed; cleaning up what the demo made:")
    try:
        await demo.unwind()
    except DemoFailed as exc:
        failure = failure or exc
    return failure


async def run_demo(args: argparse.Namespace) -> int:
    report = Reporter()
    where = {"pool": "a GlusterFS pool of three servers", "glusterd": "the local glusterd",
             "memory": "memory"}[args.storage]
    print(f"Bringing the local cluster up (Heketi simulator on {where}, controller, "
          "node, registrar, kubelet simulator) ...", flush=True)
    started = time.monotonic()
    cluster = LocalCluster(args.base_dir, storage=args.storage, pool=pool_config(args),
                           keep_logs=args.keep_logs, heketi_op_latency=args.heketi_op_latency)
    try:
        await cluster.start()
    except ClusterError as exc:
        print(f"the local cluster did not start:\n{exc}", file=sys.stderr)
        return 1
    failure: DemoFailed | None = None
    clean_before_teardown: list[str] = []
    try:
        print(f"... up in {time.monotonic() - started:.1f} s\n")
        print(cluster.summary())
        print()
        async with CsiClient(cluster.controller_socket) as ctl, \
                CsiClient(cluster.node_socket) as node:
            demo = Demo(cluster, ctl, node, report)
            failure = await play_and_unwind(demo)
        clean_before_teardown = await cluster.leftovers()
        print()
        if clean_before_teardown:
            print("Check before teardown: the driver left behind: "
                  + "; ".join(clean_before_teardown))
        else:
            print("Check before teardown: no mounts under the cluster directory and no "
                  "gluster volume with a brick there: the driver cleaned up after itself.")
        if demo.not_built:
            print("Not implemented by the driver (answered UNIMPLEMENTED): "
                  + ", ".join(demo.not_built))
    finally:
        base = cluster.base_dir
        teardown = await cluster.stop()
    left = [f"mount {m.mount_point}" for m in mounts_under(base)]
    if cluster.use_glusterd:
        left += [f"gluster volume {v}" for v in await gluster_volumes_with_bricks_under(base)]
    if base.exists() and not args.keep_logs:
        left.append(f"directory {base}")
    print(f"Teardown: {teardown.text()}")
    if left or not teardown.clean:
        print("Check after teardown: LEFT BEHIND: " + "; ".join(left + teardown.problems))
        return 1
    print(f"Check after teardown: nothing left behind (no mounts under {base}, no gluster "
          "volume with bricks there, "
          + ("only the logs kept)." if args.keep_logs else "directory removed)."))
    if failure is not None:
        print(f"\nDEMO FAILED at {failure}", file=sys.stderr)
        return 1
    if clean_before_teardown:
        return 1
    print("\nDemo finished: exit 0.")
    return 0


async def run_against(args: argparse.Namespace) -> int:
    """Play the demo against a driver that is already running (e.g. docker compose)."""
    async with CsiClient(args.controller_endpoint) as ctl, \
            CsiClient(args.node_endpoint) as node:
        deadline = time.monotonic() + args.wait
        while True:
            try:
                if await ctl.probe() and await node.probe():
                    break
            except (GRPCError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                print(f"the driver did not become ready within {args.wait:g} s "
                      f"({args.controller_endpoint}, {args.node_endpoint})", file=sys.stderr)
                return 1
            await asyncio.sleep(1.0)
        node_id = (await node.node_info()).node_id
        driver = (await node.plugin_info()).name
        target = RunningDriver(node_id, KubeletPaths(Path(args.kubelet_root), driver))
        failure = await play_and_unwind(Demo(target, ctl, node, Reporter()))
        left = await target.leftovers()
    print()
    if left:
        print("Check: the driver left behind: " + "; ".join(left))
        return 1
    print("Check: no mounts left under the kubelet root's pods and staging directories.")
    if failure is not None:
        print(f"\nDEMO FAILED at {failure}", file=sys.stderr)
        return 1
    print("\nDemo finished: exit 0.")
    return 0


async def _main(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        if args.controller_endpoint or args.node_endpoint:
            if not (args.controller_endpoint and args.node_endpoint):
                print("give both --controller-endpoint and --node-endpoint", file=sys.stderr)
                return 2
            return await run_against(args)
        return await run_demo(args)
    except asyncio.CancelledError:
        print("\ninterrupted; the local cluster was torn down", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="Play a PVC's life (create, attach, stage, publish, expand, snapshot, "
                    "restore, clean up) on a local heketi-csi cluster.")
    parser.add_argument("--base-dir", type=Path, default=None,
                        help="directory for the cluster (default: a new $TMPDIR/hcsi-<random>)")
    parser.add_argument("--controller-endpoint",
                        default=os.environ.get("CSI_CONTROLLER_ENDPOINT"),
                        help="play against a controller already running on this socket "
                             "instead of starting a local cluster (env CSI_CONTROLLER_ENDPOINT)")
    parser.add_argument("--node-endpoint", default=os.environ.get("CSI_NODE_ENDPOINT"),
                        help="the running node plugin's socket (env CSI_NODE_ENDPOINT)")
    parser.add_argument("--kubelet-root", default=os.environ.get("KUBELET_ROOT",
                                                                 "/var/lib/kubelet"),
                        help="with the endpoints: the node's kubelet root as this process "
                             "sees it (env KUBELET_ROOT)")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="with the endpoints: seconds to wait for the driver to be ready")
    parser.add_argument("--keep-logs", action="store_true",
                        help="leave the processes' logs in <base>/logs")
    add_latency_options(parser)
    add_storage_options(parser)
    try:
        return asyncio.run(_main(parser.parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
