"""`python -m devtools.heketi_sim`: run the simulator as a process.

Prints `heketi-sim listening on http://<host>:<port>` on stdout once it accepts requests,
and exits 0 on SIGTERM/SIGINT after deleting (in glusterd mode) every gluster volume it made.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from devtools.heketi_sim.brick_fs import BrickFsError
from devtools.heketi_sim.latency import INSTANT, REALISTIC
from devtools.heketi_sim.node_health import HEKETI_INTERVAL, HEKETI_START_DELAY
from devtools.heketi_sim.server import HeketiSimulator, SimConfig
from devtools.heketi_sim.statefile import StateFileError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devtools.heketi_sim",
                                description="Heketi v10 REST API simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--admin-key", default="admin-secret")
    p.add_argument("--user-key", default="user-secret")
    p.add_argument("--no-auth", action="store_true", help="behave like use_auth: false")
    p.add_argument("--glusterd", action="store_true",
                   help="back each volume by a real gluster volume on this host")
    p.add_argument("--brick-root", type=Path, help="directory for bricks (glusterd mode)")
    p.add_argument("--unsized-bricks", action="store_true",
                   help="glusterd mode: plain directory bricks instead of one XFS file system "
                        "of the volume's size per brick; every volume then LIES about its size "
                        "(df shows the disk under --brick-root, writes beyond the size succeed)")
    p.add_argument("--storage-host", default=None,
                   help="storage hostname of every node (glusterd mode: this host's name)")
    p.add_argument("--gluster-pool", default=None, metavar="NAME",
                   help="pool mode: real volumes across the servers of this gluster pool "
                        "(python -m devtools.gluster_pool up first)")
    latency = p.add_mutually_exclusive_group()
    latency.add_argument("--op-latency", type=float, default=REALISTIC, metavar="SECONDS",
                         help="seconds each asynchronous operation takes (default "
                              f"{REALISTIC:g}: a real create on LVM takes seconds)")
    latency.add_argument("--instant", action="store_const", dest="op_latency",
                         const=INSTANT,
                         help="operations end as soon as they start (the fast tests' mode)")
    p.add_argument("--health-start", type=float, default=HEKETI_START_DELAY, metavar="SECONDS",
                   help="pool mode: seconds before the first node health check (Heketi's "
                        f"default {HEKETI_START_DELAY:g})")
    p.add_argument("--health-interval", type=float, default=HEKETI_INTERVAL, metavar="SECONDS",
                   help="pool mode: seconds between node health checks; a node found down "
                        f"takes no bricks (Heketi's default {HEKETI_INTERVAL:g})")
    p.add_argument("--max-inflight", type=int, default=8,
                   help="running operations beyond which Heketi answers 429")
    p.add_argument("--retry-after", type=int, default=None,
                   help="send Retry-After (seconds) with 429 answers")
    p.add_argument("--clusters", type=int, default=1)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--devices-per-node", type=int, default=3)
    p.add_argument("--device-size-gib", type=int, default=1024)
    p.add_argument("--max-volumes-per-cluster", type=int, default=1000)
    p.add_argument("--name-clash-on-queue", action="store_true",
                   help="report a name clash on the queue (pre-v10 Heketi) instead of at once")
    p.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="state file: volumes, bricks and pending operations survive a kill "
                        "and restart on the same file, as in Heketi's BoltDB (stale "
                        "operations held until the background cleaner rolls them back); "
                        "not with --glusterd or --gluster-pool")
    p.add_argument("--cleaner-start", type=float, default=60.0, metavar="SECONDS",
                   help="with --db: seconds after start before the background cleaner of "
                        "stale operations first runs (Heketi's start_time_background_cleaner)")
    p.add_argument("--cleaner-refresh", type=float, default=3600.0, metavar="SECONDS",
                   help="with --db: seconds between its runs (refresh_time_background_cleaner)")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    return p


async def _run(args: argparse.Namespace) -> int:
    config = SimConfig(
        admin_key=args.admin_key, user_key=args.user_key, use_auth=not args.no_auth,
        host=args.host, port=args.port, max_inflight=args.max_inflight,
        op_latency=args.op_latency, retry_after=args.retry_after, clusters=args.clusters,
        nodes=args.nodes, devices_per_node=args.devices_per_node,
        device_size_gib=args.device_size_gib,
        max_volumes_per_cluster=args.max_volumes_per_cluster,
        glusterd=args.glusterd, brick_root=args.brick_root, storage_host=args.storage_host,
        sized_bricks=not args.unsized_bricks, gluster_pool=args.gluster_pool,
        name_clash_on_queue=args.name_clash_on_queue, tls_cert=args.tls_cert,
        tls_key=args.tls_key, db=args.db, cleaner_start_s=args.cleaner_start,
        cleaner_refresh_s=args.cleaner_refresh, health_start=args.health_start,
        health_interval=args.health_interval,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sim = HeketiSimulator(config)
    try:
        await sim.start()
    except StateFileError as exc:
        await sim.close()
        print(f"heketi-sim: {exc}", file=sys.stderr)
        return 2
    except BrickFsError as exc:
        await sim.close()
        print(f"heketi-sim: cannot make sized bricks: {exc}; --unsized-bricks runs with "
              f"directory bricks that report the host disk's size instead", file=sys.stderr)
        return 2
    try:
        print(f"heketi-sim listening on {sim.url}", flush=True)
        await stop.wait()
    finally:
        await sim.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.glusterd and args.brick_root is None:
        print("--glusterd needs --brick-root", file=sys.stderr)
        return 2
    if args.db is not None and (args.glusterd or args.gluster_pool):
        print("--db is for the in-memory simulator only (not with --glusterd or "
              "--gluster-pool)", file=sys.stderr)
        return 2
    if args.health_interval <= 0 or args.health_start < 0:
        print("--health-interval must be > 0 and --health-start >= 0", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
