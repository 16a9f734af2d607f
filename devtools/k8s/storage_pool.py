"""The local cluster's GlusterFS storage: a pool of three servers (devtools/gluster_pool).

`up` brings the pool up (or keeps one that is wholly up) and lets pods reach it; `down`
removes both. What reaches the servers and how:

- the Heketi simulator's pod (k8s/local patches k8s/e2e's into pool mode) makes every volume
  across the servers: it enters their namespaces by PID (host PID namespace) and reads the
  pool's state file (the pool's directory, mounted at the same path);
- the node plugin (host network) mounts `<server address>:/<volume>` through the host's veth
  on the pool's switch;
- the controller, a pod on the cluster's bridge, asks the servers' glusterd port mappers for
  the bricks' health (`--brick-health-timeout`): the host forwards pod traffic to the pool's
  /24 only, masqueraded as the host's pool address, since the servers have no route but
  their own subnet. Nothing else is forwarded, and nothing leaves the machine.
"""

from __future__ import annotations

import asyncio

from devtools.gluster_pool import GlusterPool, PoolConfig
from devtools.k8s.cluster import _ipt, log
from devtools.k8s.config import BRIDGE, POD_CIDR, POOL_NAME, POOL_SERVERS, POOL_SUBNET

FORWARD_CHAIN = "HCSI-FORWARD"
NAT_CHAIN = "HCSI-POOL"


def pool() -> GlusterPool:
    return GlusterPool(PoolConfig(name=POOL_NAME, servers=POOL_SERVERS, subnet=POOL_SUBNET),
                       log=lambda line: log(f"gluster pool: {line}"))


def _wholly_up(p: GlusterPool) -> bool:
    return (p.state.switch_pid is not None and p.state.subnet == POOL_SUBNET
            and p.state.servers == POOL_SERVERS and p.running() == p.indexes)


async def _up() -> GlusterPool:
    p = pool()
    if _wholly_up(p) and not [i for i in p.indexes if not await _answers(p, i)]:
        log(f"gluster pool {POOL_NAME}: already up ({POOL_SUBNET}.0/24)")
        return p
    left = await p.down()
    if left:
        raise SystemExit(f"gluster pool {POOL_NAME}: could not clear what an earlier run "
                         f"left: {'; '.join(left)}")
    p = pool()
    await p.up()
    return p


async def _answers(p: GlusterPool, index: int) -> bool:
    peers = await p.connected_peers(index)
    return len(peers) == POOL_SERVERS  # itself included


def pods_reach_pool(p: GlusterPool) -> None:
    """Forward pod traffic to the pool's /24 (and its answers back), masqueraded as the
    host's pool address; `cluster.down` removes the HCSI- chains with everything else."""
    subnet = f"{POOL_SUBNET}.0/24"
    veth = p.host_veth
    rules = _ipt("filter", "-S", FORWARD_CHAIN).stdout
    if f"-o {veth} " not in rules:
        # before the chain's DROPs of whatever else leaves or enters the bridge
        _ipt("filter", "-I", FORWARD_CHAIN, "1", "-i", BRIDGE, "-o", veth, "-d", subnet,
             "-j", "ACCEPT")
        _ipt("filter", "-I", FORWARD_CHAIN, "2", "-i", veth, "-o", BRIDGE, "-s", subnet,
             "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    if _ipt("nat", "-n", "-L", NAT_CHAIN, check=False).returncode != 0:
        _ipt("nat", "-N", NAT_CHAIN)
        _ipt("nat", "-A", NAT_CHAIN, "-s", POD_CIDR, "-d", subnet, "-o", veth,
             "-j", "MASQUERADE")
        _ipt("nat", "-I", "POSTROUTING", "-j", NAT_CHAIN)
    log(f"pods on {POD_CIDR} reach the gluster pool's {subnet} through {veth} (masqueraded)")


def up() -> None:
    """The pool, up and reachable from pods (before the Heketi simulator's pod starts)."""
    pods_reach_pool(asyncio.run(_up()))


def down() -> list[str]:
    """Everything of the pool (processes, namespaces, veths, loop devices, mounts, files);
    what could not be removed. Run after the pods are gone: the simulator's pod deletes its
    volumes on SIGTERM, which needs the servers."""
    return [f"gluster pool: {item}" for item in asyncio.run(pool().down())]
