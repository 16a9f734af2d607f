"""The GlusterFS pool (devtools/gluster_pool) under faults: prints numbers, asserts nothing.

    python bench/bench_gluster_pool.py [--ping-timeout 5] [--hold 10] [--with-default-timeout]
        [--class k8s/examples/classes/storageclass-replica3.yaml] [--subnet 10.231.4]

On a pool of three servers of its own (`gpbench`, 10.231.4.0/24) and a replica 3 volume
mounted on the host, with a writer appending a line + fsync every 100 ms:

1. pool up, volume create + start, FUSE mount;
2. per fault (one server partitioned, stopped cleanly, powered off; two powered off), held
   `--hold` seconds: the longest write, failed writes, the client's reconnection after the
   return, and the heal time (`gluster volume heal`, waited until no entry is left);
3. mount time with the first volfile server up, partitioned and powered off (with
   `backup-volfile-servers`).

`--with-default-timeout` runs the one-server faults again with gluster's default
`network.ping-timeout` (42 s): several minutes more. `--class` takes the volume's options
from a StorageClass's `volumeoptions` instead (its own ping-timeout included). The pool is
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.gluster_pool import GlusterPool, PoolConfig
from devtools.gluster_pool.writer_log import Writer
from services.controller.params import parse_params


def quiet(_line: str) -> None:
    pass


async def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the writer made no progress")
        await asyncio.sleep(0.05)


async def fault(pool: GlusterPool, mount: Path, volume: str, name: str, hold: float,
                down: Callable[[], Awaitable[None]], up: Callable[[], Awaitable[None]],
                work: Path) -> None:
    await pool.wait_client_connected(mount)
    writer = Writer(mount / f"{name}.txt", work / f"{name}.log")
    async with writer:
        await _wait(lambda: len(writer.acked()) >= 10, 30)
        began = time.time()
        await down()
        await asyncio.sleep(hold)  # the fault's length is the measured scenario itself
        await up()
        back = time.time()
        reconnect = await pool.wait_client_connected(mount, 120)
        await _wait(lambda: writer.oks_after(back + reconnect) >= 10, 120)
    heal = await pool.heal(volume)
    errors = writer.errors()
    kinds = sorted({e.error for e in errors})
    print(f"  {name:<34} longest write {writer.longest(began):6.2f} s, "
          f"{len(errors):3d} failed writes {','.join(kinds) or ''}, client reconnected "
          f"{reconnect:5.2f} s after the return, heal {heal:5.2f} s", flush=True)


async def faults(pool: GlusterPool, mount: Path, volume: str, hold: float, tag: str,
                 work: Path, two_down: bool) -> None:
    await fault(pool, mount, volume, f"partition ({tag})", hold,
                lambda: pool.partition(2), lambda: pool.restore(2), work)
    await fault(pool, mount, volume, f"clean stop ({tag})", hold,
                lambda: pool.stop(2), lambda: pool.start(2), work)
    await fault(pool, mount, volume, f"power-off ({tag})", hold,
                lambda: pool.kill(3), lambda: pool.start(3), work)
    if two_down:
        async def both_down() -> None:
            await pool.kill(2)
            await pool.kill(3)

        async def both_up() -> None:
            await pool.start(2)
            await pool.start(3)

        await fault(pool, mount, volume, f"two powered off ({tag})", hold, both_down,
                    both_up, work)


async def mount_times(pool: GlusterPool, volume: str) -> None:
    target = pool.mounts_dir / "probe"
    cases: list[tuple[str, Callable[[], Awaitable[None]] | None,
                      Callable[[], Awaitable[None]] | None]] = [
        ("up", None, None),
        ("partitioned (link down)", lambda: pool.partition(1), lambda: pool.restore(1)),
        ("powered off", lambda: pool.kill(1), lambda: pool.start(1)),
    ]
    for what, down, up in cases:
        if down is not None:
            await down()
        try:
            seconds = await pool.mount(volume, target, first=1)
            await pool.unmount(target)
            print(f"  mount, first volfile server {what:<24} {seconds:6.2f} s", flush=True)
        finally:
            if up is not None:
                await up()


async def main(args: argparse.Namespace) -> None:
    pool = GlusterPool(PoolConfig(name="gpbench", subnet=args.subnet), log=quiet)
    options = {"network.ping-timeout": str(args.ping_timeout)}
    if args.storage_class is not None:
        options = class_options(args.storage_class)
    timeout = options.get("network.ping-timeout", "42")
    await pool.down()
    work = Path(tempfile.mkdtemp(prefix="bench-gluster-pool-"))
    try:
        start = time.monotonic()
        await pool.up()
        print(f"pool of 3 up: {time.monotonic() - start:.2f} s")
        start = time.monotonic()
        await pool.volume_create("b3", "replica", options=options)
        print(f"replica 3 volume create + start: {time.monotonic() - start:.2f} s")
        mount = pool.mounts_dir / "b3"
        print(f"FUSE mount from the host: {await pool.mount('b3', mount):.2f} s")
        print(f"faults held {args.hold:g} s, options {options}:")
        await faults(pool, mount, "b3", args.hold, f"ping-timeout {timeout}",
                     work, two_down=True)
        if args.with_default_timeout:
            await pool.volume_set("b3", "network.ping-timeout", "42")
            await pool.unmount(mount)
            await pool.mount("b3", mount)
            print(f"faults held {args.hold:g} s, network.ping-timeout 42 s (gluster's default):")
            await faults(pool, mount, "b3", args.hold, "ping-timeout 42", work,
                         two_down=False)
        await pool.unmount(mount)
        print("mount time (backup-volfile-servers = the two others):")
        await mount_times(pool, "b3")
    finally:
        with contextlib.suppress(Exception):
            await pool.volume_delete("b3")
        left = await pool.down()
        if left:
            print(f"LEFT BEHIND: {left}", file=sys.stderr)


def class_options(path: Path) -> dict[str, str]:
    """A StorageClass's `volumeoptions`, parsed as the controller parses them, as a dict."""
    params = yaml.safe_load(path.read_text())["parameters"]
    parsed = parse_params({"volumeoptions": params.get("volumeoptions", "")})
    return dict(option.split(None, 1) for option in parsed.volume_options)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ping-timeout", type=int, default=5)
    p.add_argument("--hold", type=float, default=10.0, help="seconds each fault lasts")
    p.add_argument("--with-default-timeout", action="store_true")
    p.add_argument("--class", dest="storage_class", type=Path, default=None,
                   help="a StorageClass YAML: its volumeoptions are the volume's options")
    p.add_argument("--subnet", default="10.231.4", help="the pool's /24 (first three octets)")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_args()))
