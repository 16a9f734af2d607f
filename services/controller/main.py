"""Run the CSI controller: volumes, snapshots and clones through Heketi."""

from __future__ import annotations

import argparse
import asyncio

from services.common.config import (
    add_common_flags,
    add_flag,
    unix_socket_path,
)
from services.common.health import (
    add_http_endpoint_flag,
    csi_probe_check,
    parse_http_endpoint,
    serve_health,
)
from services.common.identity import IdentityService, csi_servables
from services.common.metrics import start_metrics_server
from services.common.server import StartupError, run_grpc_server
from services.controller.backends import (
    BackendRegistry,
    ClientSettings,
    adhoc_urls,
    backends_from_args,
)
from services.controller.nodes import make_node_check
from services.controller.pv_annotator import PvGidAnnotator
from services.controller.service import ControllerService


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser, default_endpoint="unix:///csi/csi.sock")
    add_http_endpoint_flag(parser)
    add_flag(parser, "--heketi-url", env="HEKETI_URL",
             help="URL of the Heketi server (the backend named 'default')")
    add_flag(parser, "--heketi-user", env="HEKETI_USER", default="admin",
             help="Heketi user (JWT issuer); volume management needs admin")
    add_flag(parser, "--heketi-key-file", env="HEKETI_KEY_FILE",
             help="file holding the Heketi key, e.g. from a mounted Secret; the env var "
                  "HEKETI_KEY is read when no file is given")
    add_flag(parser, "--backends-file", env="HEKETI_BACKENDS_FILE",
             help="YAML list of Heketi backends (name, url, user, key_file, ca_file), for "
                  "more than one Heketi")
    add_flag(parser, "--adhoc-heketi-urls", env="HEKETI_ADHOC_URLS", default="",
             help="comma-separated Heketi URLs a StorageClass resturl may name besides the "
                  "configured backends (used with the request's secrets); none by default")
    add_flag(parser, "--heketi-ca-file", env="HEKETI_CA_FILE",
             help="CA bundle to verify Heketi's TLS certificate")
    add_flag(parser, "--heketi-max-inflight", env="HEKETI_MAX_INFLIGHT", default="8", type=int,
             help="mutating Heketi operations run at once per backend; more wait in the driver")
    add_flag(parser, "--heketi-timeout", env="HEKETI_TIMEOUT", default="30", type=float,
             help="deadline in seconds of one HTTP request to Heketi")
    add_flag(parser, "--heketi-operation-timeout", env="HEKETI_OPERATION_TIMEOUT",
             default="1800", type=float,
             help="deadline in seconds of one Heketi operation (create, delete, expand, clone) "
                  "from queueing to result; past it the driver stops waiting, frees the slot "
                  "and looks the volume up by name")
    add_flag(parser, "--resync-interval", env="RESYNC_INTERVAL", default="300", type=float,
             help="seconds between re-reads of Heketi's volume list, to follow volumes "
                  "added or deleted outside the driver; 0 turns it off")
    add_flag(parser, "--node-check", env="NODE_CHECK", default="kubernetes",
             help="how ControllerPublishVolume checks node ids: kubernetes (CSINode objects), "
                  "static (--static-node-ids) or none")
    add_flag(parser, "--static-node-ids", env="STATIC_NODE_IDS",
             help="comma-separated node ids accepted with --node-check static")
    add_flag(parser, "--pv-gid-annotation", env="PV_GID_ANNOTATION", default="auto",
             help="auto: annotate this driver's PVs with pv.beta.kubernetes.io/gid (kubelet "
                  "then gives pods the volume's GID) when in a pod or given --kubeconfig; off")
    add_flag(parser, "--brick-health-timeout", env="BRICK_HEALTH_TIMEOUT", default="1",
             type=float,
             help="seconds ControllerGetVolume and ListVolumes give each volume's servers to "
                  "say whether its bricks are up (glusterd's port mapper, TCP 24007, then the "
                  "brick's port); 0 reports Heketi's record instead, without asking")
    add_flag(parser, "--kubeconfig", env="HEKETI_CSI_KUBECONFIG",
             help="kubeconfig for the Kubernetes API when not running in a pod")


async def run(args: argparse.Namespace) -> int:
    try:
        nodes = make_node_check(args.node_check, args.static_node_ids, args.driver_name)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if args.heketi_max_inflight < 1:
        raise StartupError("--heketi-max-inflight must be at least 1")
    if args.heketi_timeout <= 0 or args.heketi_operation_timeout <= 0:
        raise StartupError("--heketi-timeout and --heketi-operation-timeout must be positive")
    if not 0 <= args.brick_health_timeout <= 60:
        raise StartupError("--brick-health-timeout must be between 0 (off) and 60 seconds")
    if args.pv_gid_annotation not in ("auto", "off"):
        raise StartupError("--pv-gid-annotation must be auto or off")
    if args.http_endpoint:
        parse_http_endpoint(args.http_endpoint)
    registry = BackendRegistry(
        backends_from_args(args),
        ClientSettings(max_inflight=args.heketi_max_inflight,
                       request_timeout=args.heketi_timeout,
                       operation_timeout=args.heketi_operation_timeout),
        adhoc_urls(args.adhoc_heketi_urls),
    )
    service = ControllerService(registry, nodes, brick_health_timeout=args.brick_health_timeout)

    async def ready() -> bool:
        return registry.ready()

    identity = IdentityService(args.driver_name, ready)
    tasks: list[asyncio.Task[None]] = []
    metrics = None
    health = None

    async def on_start() -> None:
        nonlocal metrics, health
        metrics = await start_metrics_server(args.metrics_port)
        health = await serve_health(args.http_endpoint,
                                    csi_probe_check(unix_socket_path(args.endpoint)))
        tasks.append(asyncio.create_task(registry.warm_up()))
        if args.resync_interval > 0:
            tasks.append(asyncio.create_task(registry.resync_forever(args.resync_interval)))
        if args.pv_gid_annotation == "auto":
            annotator = PvGidAnnotator(args.driver_name, args.kubeconfig)
            tasks.append(asyncio.create_task(annotator.run()))

    async def on_stop() -> None:
        for task in tasks:
            task.cancel()
        await service.ops.drain(args.grace_period)
        await registry.close()
        await nodes.close()
        for runner in (health, metrics):
            if runner is not None:
                await runner.cleanup()

    return await run_grpc_server(
        args.endpoint,
        csi_servables(identity, controller=service),
        on_start=on_start, on_stop=on_stop, grace=args.grace_period,
    )
