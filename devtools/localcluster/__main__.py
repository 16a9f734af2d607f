"""`python -m devtools.localcluster` (`make up`): keep a local cluster running until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.gluster_pool import PoolConfig
from devtools.heketi_sim.latency import add_latency_options
from devtools.localcluster.cluster import DEFAULT_POOL, STORAGE_MODES, LocalCluster
from devtools.localcluster.processes import ClusterError, log_tail


async def _watch(cluster: LocalCluster, stop: asyncio.Event) -> None:
    while not stop.is_set():
        dead = cluster.dead_processes()
        if dead:
            for proc in dead:
                print(f"\n{proc.name} exited with {proc.proc and proc.proc.returncode}\n"
                      f"{log_tail(proc)}", file=sys.stderr)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _up(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    signals: list[str] = []
    stop_armed = False

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if len(signals) > 1:
            print(f"({sig.name}: already stopping)", file=sys.stderr)
            return
        print(f"\n{sig.name}: stopping the local cluster ...", flush=True)
        if stop_armed and main_task is not None:
            stop.set()
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    print("starting the local cluster ...", flush=True)
    cluster = LocalCluster(args.base_dir, storage=args.storage, pool=pool_config(args),
                           keep_logs=args.keep_logs, heketi_op_latency=args.heketi_op_latency,
                           sim_args=["--unsized-bricks"] if args.unsized_bricks else [])
    try:
        await cluster.start()
    except asyncio.CancelledError:
        print("interrupted during start-up; everything was torn down")
        return 130
    except ClusterError as exc:
        print(f"the local cluster did not start:\n{exc}", file=sys.stderr)
        return 1
    failed = False
    try:
        stop_armed = True
        print(cluster.summary())
        print()
        print(cluster.examples())
        print("\nRunning. Ctrl-C (or SIGTERM) stops everything and removes it.", flush=True)
        await _watch(cluster, stop)
        failed = bool(cluster.dead_processes())
    finally:
        report = await cluster.stop()
        print("teardown: " + report.text().replace("\n", "\n  "))
    if not report.clean or failed:
        return 1
    print("stopped; nothing left behind")
    return 0


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """--storage, --pool-name, --pool-subnet (also the demo's)."""
    parser.add_argument("--storage", choices=STORAGE_MODES, default="pool",
                        help="where the simulator makes volumes: pool (default: a GlusterFS "
                             "pool of three servers in namespaces of their own, replica 3 "
                             "across them), glusterd (this host's glusterd, one brick per "
                             "volume: faster, nothing replicated) or memory (nothing mounts)")
    parser.add_argument("--pool-name", default=DEFAULT_POOL.name,
                        help=f"the pool's name (default {DEFAULT_POOL.name})")
    parser.add_argument("--pool-subnet", default=DEFAULT_POOL.subnet,
                        help=f"the pool's /24, first three octets (default {DEFAULT_POOL.subnet})")


def pool_config(args: argparse.Namespace) -> PoolConfig:
    return PoolConfig(name=args.pool_name, subnet=args.pool_subnet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.localcluster",
        description="Run the local heketi-csi cluster (a GlusterFS pool, the Heketi "
                    "simulator on it, controller, node, registrar, kubelet simulator) until "
                    "Ctrl-C.")
    parser.add_argument("--base-dir", type=Path, default=None,
                        help="directory for sockets, bricks and logs (default: a new "
                             "$TMPDIR/hcsi-<random>)")
    add_storage_options(parser)
    parser.add_argument("--unsized-bricks", action="store_true",
                        help="--storage glusterd: plain directory bricks: volumes then report "
                             "the host disk's size, not their own (for machines without loop "
                             "devices)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="leave <base>/logs behind when stopping")
    add_latency_options(parser)
    args = parser.parse_args(argv)
    if args.unsized_bricks and args.storage != "glusterd":
        parser.error("--unsized-bricks is an option of --storage glusterd")
    return asyncio.run(_up(args))


if __name__ == "__main__":
    sys.exit(main())
