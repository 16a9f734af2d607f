"""Node plugin: mounts GlusterFS volumes on this node (CSI Identity + Node)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil

from aiohttp import web

from services.common.commands import CommandTimeout, run_command
from services.common.config import add_common_flags, add_flag, unix_socket_path
from services.common.errors import InvalidArgument
from services.common.health import (
    add_http_endpoint_flag,
    csi_probe_check,
    parse_http_endpoint,
    serve_health,
)
from services.common.identity import IdentityService, csi_servables
from services.common.keyed_operations import KeyedOperations
from services.common.logging import get_logger
from services.common.metrics import start_metrics_server
from services.common.server import run_grpc_server
from services.node.adopt import adopt
from services.node.aftercare import Aftercare
from services.node.clients import ClientCgroups
from services.node.fsstat import FsProbe
from services.node.mounter import DEFAULT_SCRATCH, SystemMounter
from services.node.mountopts import LOG_LEVELS
from services.node.paths import normalize_root, validate_for_helper
from services.node.pods import Pods
from services.node.pods import connect as connect_pods
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StateStore, state_dir
from services.node.volfile_servers import DEFAULT_DEADLINE, VolfileProber

_log = get_logger("node.main")

# The client group that start-up runs `true` in, to see that client groups work here.
PROBE_GROUP = "probe"
PROBE_SECONDS = 10.0

DEFAULT_ENDPOINT = "unix:///var/lib/kubelet/plugins/glusterfs.heketi.csi.io/csi.sock"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser, default_endpoint=DEFAULT_ENDPOINT)
    add_http_endpoint_flag(parser)
    add_flag(
        parser,
        "--node-id",
        env="KUBE_NODE_NAME",
        default=None,
        required=True,
        help="name of this node as Kubernetes knows it (NodeGetInfo answers it)",
    )
    add_flag(
        parser,
        "--kubelet-root",
        env="KUBELET_ROOT",
        default="/var/lib/kubelet",
        help="kubelet's root directory; staging and target paths must lie below it",
    )
    add_flag(
        parser,
        "--gluster-log-dir",
        env="GLUSTER_LOG_DIR",
        default="/var/log/glusterfs/csi",
        help="directory for the per-volume gluster client log files",
    )
    add_flag(
        parser,
        "--gluster-log-level",
        env="GLUSTER_LOG_LEVEL",
        default="ERROR",
        help="gluster client log level: " + ", ".join(sorted(LOG_LEVELS)),
    )
    add_flag(
        parser,
        "--mount-timeout",
        env="MOUNT_TIMEOUT",
        default="60",
        type=float,
        help="seconds a glusterfs mount may take before it is killed",
    )
    add_flag(
        parser,
        "--volfile-probe-timeout",
        env="VOLFILE_PROBE_TIMEOUT",
        default=str(DEFAULT_DEADLINE),
        type=float,
        help="seconds the gluster servers' management port (24007) is given to answer "
        "before a mount; the mount asks the ones that answered first for the volfile "
        "(a silent first server would otherwise cost ~45 s); 0 = no check, Heketi's order",
    )
    add_flag(
        parser,
        "--stats-timeout",
        env="STATS_TIMEOUT",
        default="5",
        type=float,
        help="seconds a stat/statvfs of a mounted volume may take before the volume "
        "is reported abnormal",
    )
    add_flag(
        parser,
        "--repair-interval",
        env="REPAIR_INTERVAL",
        default="30",
        type=float,
        help="seconds between health passes (re-mount volumes whose gluster client died, "
        "report stopped or hung ones, look again at pods with stale mounts); 0 = only at "
        "start-up. A client that dies is re-mounted at once anyway",
    )
    add_flag(
        parser,
        "--health-timeout",
        env="HEALTH_TIMEOUT",
        default="1.5",
        type=float,
        help="seconds a mounted volume may take to answer statvfs in NodeGetVolumeStats and "
        "health passes before it is reported abnormal (hung)",
    )
    add_flag(
        parser,
        "--client-cgroup-root",
        env="CLIENT_CGROUP_ROOT",
        default="",
        help="the host's /sys/fs/cgroup as mounted in the node container: each gluster "
        "client then runs in a cgroup of its own there and outlives restarts and upgrades "
        "of the node container; empty: clients run in the node's own cgroups and die with "
        "its container (docs/node-recovery.md)",
    )
    add_flag(
        parser,
        "--delete-stale-pods",
        env="DELETE_STALE_PODS",
        default="false",
        type=_boolean,
        help="evict pods (with a controller that re-creates them) whose containers still see "
        "the dead mount of a repaired volume because they mount it without "
        "mountPropagation: HostToContainer; needs API access (true or false)",
    )


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return value in ("true", "1", "yes")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a configuration the node cannot work with, with a message saying why."""
    if not args.node_id:
        raise InvalidArgument("--node-id (or KUBE_NODE_NAME) is required")
    try:
        args.kubelet_root = normalize_root(args.kubelet_root)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if not args.gluster_log_dir.startswith("/"):
        raise InvalidArgument("--gluster-log-dir must be an absolute path")
    args.gluster_log_dir = os.path.normpath(args.gluster_log_dir)
    validate_for_helper(args.gluster_log_dir, "--gluster-log-dir")
    level = args.gluster_log_level.upper()
    if level not in LOG_LEVELS:
        raise InvalidArgument(
            f"--gluster-log-level {args.gluster_log_level!r} is not one of "
            + ", ".join(sorted(LOG_LEVELS))
        )
    args.gluster_log_level = level
    for flag in ("mount_timeout", "stats_timeout", "health_timeout"):
        if getattr(args, flag) <= 0:
            raise InvalidArgument(f"--{flag.replace('_', '-')} must be positive")
    if args.volfile_probe_timeout < 0:
        raise InvalidArgument("--volfile-probe-timeout must be 0 or positive")
    if args.client_cgroup_root and not args.client_cgroup_root.startswith("/"):
        raise InvalidArgument("--client-cgroup-root must be an absolute path")
    if args.repair_interval < 0:
        raise InvalidArgument("--repair-interval must be 0 or positive")
    if args.http_endpoint:
        parse_http_endpoint(args.http_endpoint)


def mount_helper_present() -> bool:
    return shutil.which("mount.glusterfs") is not None or os.path.exists("/sbin/mount.glusterfs")


def can_mount() -> bool:
    """Whether this node can make FUSE mounts of gluster volumes (helper and /dev/fuse)."""
    return mount_helper_present() and os.path.exists("/dev/fuse")


async def client_cgroups(args: argparse.Namespace) -> ClientCgroups | None:
    """The cgroups the gluster clients run in, or None (in the node's own) when not
    configured or not usable here (logged: clients then die with the node container).
    Usable means a process started in one really is a member of it."""
    if not args.client_cgroup_root:
        return None
    try:
        cgroups = await asyncio.to_thread(
            ClientCgroups.find, args.client_cgroup_root, args.driver_name)
        prefix = await asyncio.to_thread(cgroups.exec_prefix, PROBE_GROUP)
        try:
            result = await run_command([*prefix, "true"], PROBE_SECONDS)
        finally:
            await asyncio.to_thread(cgroups.remove, PROBE_GROUP)
        if result.returncode != 0:
            raise OSError(result.output or f"exit status {result.returncode}")
    except (OSError, ValueError, CommandTimeout) as exc:
        _log.error("cannot run gluster clients outside the node container; they die with it",
                   client_cgroup_root=args.client_cgroup_root, error=str(exc))
        return None
    _log.info("gluster clients run outside the node container",
              hierarchies=[str(h) for h in cgroups.hierarchies], parent=cgroups.parent)
    return cgroups


def build_service(
    args: argparse.Namespace, pods: Pods | None = None, cgroups: ClientCgroups | None = None
) -> NodeService:
    config = NodeConfig(
        node_id=args.node_id,
        driver_name=args.driver_name,
        kubelet_root=args.kubelet_root,
        gluster_log_dir=args.gluster_log_dir,
        gluster_log_level=args.gluster_log_level,
        mount_timeout=args.mount_timeout,
        stats_timeout=args.stats_timeout,
    )
    scratch = DEFAULT_SCRATCH / hashlib.sha256(
        f"{config.kubelet_root}:{config.driver_name}".encode()).hexdigest()[:12]
    mounter = SystemMounter(cgroups=cgroups, scratch=scratch)
    store = StateStore(state_dir(config.kubelet_root, config.driver_name))
    probe = FsProbe(config.stats_timeout, mounter.usage)
    locks = KeyedOperations()
    aftercare = Aftercare(pods, store, config.kubelet_root, config.node_id,
                          delete_stale=args.delete_stale_pods)
    repairer = Repairer(mounter, store, probe, locks, config.kubelet_root, config.mount_timeout,
                        aftercare=aftercare, health_timeout=args.health_timeout)
    volfile = VolfileProber(args.volfile_probe_timeout) if args.volfile_probe_timeout else None
    return NodeService(config, mounter, store, probe, locks, repairer, volfile=volfile)


async def readiness() -> bool:
    return can_mount()


async def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    pods = connect_pods(args.node_id)
    if args.delete_stale_pods and pods is None:
        _log.warning("--delete-stale-pods needs Kubernetes API access; no pod will be evicted")
    node = build_service(args, pods, await client_cgroups(args))
    await node.store.load()
    if isinstance(node.mounter, SystemMounter):
        await node.mounter.clear_scratch()
    # Before the first call: square the records with the mounts and clients that exist.
    await adopt(node.store, node.mounter, node.repairer.watch)
    identity = IdentityService(args.driver_name, readiness)
    repair_task: asyncio.Task[None] | None = None
    metrics: web.AppRunner | None = None
    health: web.AppRunner | None = None

    async def on_start() -> None:
        nonlocal repair_task, metrics, health
        metrics = await start_metrics_server(args.metrics_port)
        health = await serve_health(args.http_endpoint,
                                    csi_probe_check(unix_socket_path(args.endpoint)))
        if not can_mount():
            _log.warning("cannot mount: mount.glusterfs or /dev/fuse is missing")
        _log.info(
            "node started",
            node_id=args.node_id,
            kubelet_root=args.kubelet_root,
            recorded_stages=len(node.store.all()),
        )
        repair_task = asyncio.create_task(node.repairer.run_forever(args.repair_interval))

    async def on_stop() -> None:
        if repair_task is not None:
            repair_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repair_task
        await node.wait_idle()
        await node.repairer.close()
        if isinstance(node.mounter, SystemMounter):
            await node.mounter.clear_scratch(remove=True)
        if pods is not None:
            await pods.close()
        for runner in (health, metrics):
            if runner is not None:
                await runner.cleanup()

    return await run_grpc_server(
        args.endpoint,
        csi_servables(identity, node=node),
        on_start=on_start,
        on_stop=on_stop,
        grace=args.grace_period,
    )
