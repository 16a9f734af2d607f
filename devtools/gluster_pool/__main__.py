"""`python -m devtools.gluster_pool COMMAND`: a GlusterFS pool on this machine.

    up [--servers N]         servers, switch, host veth, trusted pool
    down                     remove everything (also after a killed `up`)
    status                   each server's state and processes
    stop N | start N         stop server N cleanly / start it again
    kill N                   power server N off (link down, then its processes killed)
    partition N | restore N  take server N's link down (silently) / up again
    heal VOL                 trigger a heal and wait until it is done
    volume-create VOL [--kind replica|arbiter|disperse|distribute] [--servers-list 1,2,3]
                  [--option key=value ...]
    volume-delete VOL
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from devtools.gluster_pool.pool import GIB, KINDS, GlusterPool, PoolConfig
from devtools.gluster_pool.processes import PoolError
from devtools.gluster_pool.state import PoolState, root


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devtools.gluster_pool",
                                description="A GlusterFS pool on this machine, each server "
                                            "in namespaces of its own.")
    p.add_argument("--name", default="gpool", help="pool name (default gpool)")
    p.add_argument("--subnet", default=None,
                   help="first three octets of the pool's /24 (default 10.231.0)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the pool")
    up.add_argument("--servers", type=int, default=3, help="3 (default) or up to 9; 6 for "
                                                           "disperse 4+2")
    up.add_argument("--image-gib", type=float, default=1.0,
                    help="size of each server's sparse brick image (default 1)")
    down = sub.add_parser("down", help="remove everything of the pool")
    down.add_argument("--keep-files", action="store_true", help="keep logs and images")
    sub.add_parser("status", help="show the servers")
    for name, what in (("stop", "stop server N cleanly"), ("start", "start server N"),
                       ("kill", "power server N off"), ("partition", "take N's link down"),
                       ("restore", "bring N's link up")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("index", type=int)
    heal = sub.add_parser("heal", help="heal a volume and wait")
    heal.add_argument("volume")
    vc = sub.add_parser("volume-create", help="create and start a volume")
    vc.add_argument("volume")
    vc.add_argument("--kind", choices=KINDS, default="replica")
    vc.add_argument("--servers-list", default=None, help="e.g. 1,2,3 (default: all)")
    vc.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    vd = sub.add_parser("volume-delete", help="stop and delete a volume")
    vd.add_argument("volume")
    return p


def _config(args: argparse.Namespace) -> PoolConfig:
    saved = PoolState.load(root() / args.name / "state.json")
    if args.command == "up":
        return PoolConfig(name=args.name, servers=args.servers,
                          subnet=args.subnet or "10.231.0",
                          image_bytes=int(args.image_gib * GIB))
    if saved is not None:
        return PoolConfig(name=args.name, servers=saved.servers, subnet=saved.subnet,
                          image_bytes=saved.image_bytes)
    return PoolConfig(name=args.name, subnet=args.subnet or "10.231.0")


async def _main(args: argparse.Namespace) -> int:
    pool = GlusterPool(_config(args), log=lambda line: print(line, flush=True))
    cmd = args.command
    if cmd == "up":
        try:
            await pool.up()
        except PoolError:
            print("up failed; `down` removes what it made", file=sys.stderr)
            raise
    elif cmd == "down":
        left = await pool.down(keep_files=args.keep_files)
        return 1 if left else 0
    elif cmd == "status":
        for line in await pool.status():
            print(line)
    elif cmd in ("stop", "start", "kill", "partition", "restore"):
        await getattr(pool, cmd)(args.index)
    elif cmd == "heal":
        await pool.heal(args.volume)
    elif cmd == "volume-create":
        options = {}
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise PoolError(f"--option {item[:80]!r}: expected KEY=VALUE")
            options[key] = value
        servers = ([int(s) for s in args.servers_list.split(",")]
                   if args.servers_list else None)
        info = await pool.volume_create(args.volume, args.kind, servers, options)
        print(f"{info.name}: {info.type}, {info.status}, bricks "
              + " ".join(f"{b.host}:{b.path}" for b in info.bricks))
    elif cmd == "volume-delete":
        await pool.volume_delete(args.volume)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (PoolError, ValueError) as exc:
        print(f"gluster-pool: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
