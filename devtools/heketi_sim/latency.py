"""How long the simulator's asynchronous operations take.

`REALISTIC` is the default everywhere a person watches (the demo, the local cluster, docker
compose, the real-Kubernetes harness) and for the simulator as a library: a real Heketi
create on LVM runs pvcreate/lvcreate --thin, mkfs.xfs, a mount and `gluster volume
create/start` over SSH on every brick's node, and takes seconds (one public log: 5.8 s;
bulk provisioning on slow clusters has taken minutes). A delete, an expansion and a clone
do the same kind of work, so every kind takes the same time here.

`INSTANT` is the mode the fast tests ask for by name: operations end as soon as they start
(the real Heketi's mock executor is as fast, which is why the differential suite cannot
tell the two apart).
"""

from __future__ import annotations

import argparse

REALISTIC = 6.0  # seconds: the reference's 5.8 s create, rounded
INSTANT = 0.0


def add_latency_options(parser: argparse.ArgumentParser) -> None:
    """`--heketi-op-latency S` and `--instant-heketi` (dest `heketi_op_latency`), for the
    local cluster and the demo, which start the simulator."""
    latency = parser.add_mutually_exclusive_group()
    latency.add_argument("--heketi-op-latency", type=float, default=REALISTIC,
                         metavar="SECONDS",
                         help="seconds each Heketi simulator operation takes (default "
                              f"{REALISTIC:g}, as a real create on LVM)")
    latency.add_argument("--instant-heketi", action="store_const", const=INSTANT,
                         dest="heketi_op_latency",
                         help="Heketi simulator operations end at once (the fast tests' mode)")
