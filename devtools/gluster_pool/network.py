"""The pool's network: a bridge in a "switch" network namespace of our own, one veth per
server into it, and one veth from the host's network namespace so that the host (the node
plugin, the Heketi simulator, FUSE clients) reaches the servers.

The host gets one address in the pool's /24 and the connected route that comes with it,
nothing else: no default route, no forwarding, so nothing is routed off the machine. A
server's link going down (`partition`) drops its packets silently, as a dead switch port does.
"""

from __future__ import annotations

import ipaddress
import json

from devtools.gluster_pool.processes import PoolError, nsenter, run

BRIDGE = "br0"
SWITCH_HOST_END = "host"


def server_port(index: int) -> str:
    """The switch-side end of server `index`'s veth."""
    return f"s{index}"


def check_subnet_free(prefix: str, host_veth: str, routes_json: str, addrs_json: str) -> None:
    """Refuse a /24 that overlaps a route or an address of the host not ours."""
    ours = ipaddress.ip_network(f"{prefix}.0/24")
    for route in json.loads(routes_json or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == host_veth:
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.overlaps(ours):
            raise PoolError(f"subnet {ours} overlaps the host's route to {dst} "
                            f"(dev {route.get('dev')}): choose another with --subnet")
    for link in json.loads(addrs_json or "[]"):
        if link.get("ifname") == host_veth:
            continue
        for addr in link.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            if ipaddress.ip_address(addr["local"]) in ours:
                raise PoolError(f"subnet {ours} holds the host's address {addr['local']} "
                                f"on {link.get('ifname')}: choose another with --subnet")


async def ensure_subnet_free(prefix: str, host_veth: str) -> None:
    routes = await run(["ip", "-j", "-4", "route", "show", "table", "all"], "reading routes")
    addrs = await run(["ip", "-j", "addr"], "reading addresses")
    check_subnet_free(prefix, host_veth, routes.output, addrs.output)


async def switch_up(switch_pid: int) -> None:
    sw = nsenter(switch_pid, "net")
    await run([*sw, "ip", "link", "set", "lo", "up"], "switch: lo up")
    await run([*sw, "ip", "link", "add", BRIDGE, "type", "bridge"], "switch: add bridge")
    await run([*sw, "ip", "link", "set", BRIDGE, "up"], "switch: bridge up")


async def host_link_up(switch_pid: int, host_veth: str, address: str) -> None:
    """One veth from the host into the switch, `address`/24 on the host's end."""
    await run(["ip", "link", "add", host_veth, "type", "veth", "peer", "name",
               SWITCH_HOST_END, "netns", str(switch_pid)], "host veth")
    sw = nsenter(switch_pid, "net")
    await run([*sw, "ip", "link", "set", SWITCH_HOST_END, "master", BRIDGE, "up"],
              "switch: host port")
    await run(["sysctl", "-qw", f"net.ipv6.conf.{host_veth}.disable_ipv6=1"],
              "host veth: no IPv6", check=False)
    await run(["ip", "addr", "add", f"{address}/24", "dev", host_veth], "host veth address")
    await run(["ip", "link", "set", host_veth, "up"], "host veth up")


async def host_link_exists(host_veth: str) -> bool:
    result = await run(["ip", "link", "show", "dev", host_veth], "host veth", check=False)
    return result.returncode == 0


async def host_link_down(host_veth: str) -> None:
    if await host_link_exists(host_veth):
        await run(["ip", "link", "del", host_veth], "deleting the host veth")


async def server_link_up(switch_pid: int, index: int, server_pid: int, hostname: str,
                         address: str) -> None:
    """Plug server `index` into the switch: veth `s<index>` ↔ `eth0` with `address`/24."""
    sw = nsenter(switch_pid, "net")
    port = server_port(index)
    # a port left by a killed server whose namespace still lingers
    await run([*sw, "ip", "link", "del", port], "stale port", check=False)
    await run([*sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", str(server_pid)], f"server {index}: veth")
    await run([*sw, "ip", "link", "set", port, "master", BRIDGE, "up"],
              f"server {index}: port up")
    inside = nsenter(server_pid, "net", "uts")
    await run([*inside, "hostname", hostname], f"server {index}: hostname")
    await run([*inside, "ip", "link", "set", "lo", "up"], f"server {index}: lo up")
    await run([*inside, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
              f"server {index}: no IPv6", check=False)
    await run([*inside, "ip", "addr", "add", f"{address}/24", "dev", "eth0"],
              f"server {index}: address")
    await run([*inside, "ip", "link", "set", "eth0", "up"], f"server {index}: eth0 up")


async def set_port(switch_pid: int, index: int, up: bool) -> None:
    await run([*nsenter(switch_pid, "net"), "ip", "link", "set", server_port(index),
               "up" if up else "down"], f"server {index}: link {'up' if up else 'down'}")


async def delete_port(switch_pid: int, index: int) -> None:
    """Delete server `index`'s veth (both ends): a namespace that lingers on orphaned sockets
    then holds neither the veth nor the address, and the server can start again."""
    await run([*nsenter(switch_pid, "net"), "ip", "link", "del", server_port(index)],
              f"server {index}: delete port", check=False)


async def port_is_up(switch_pid: int, index: int) -> bool:
    result = await run([*nsenter(switch_pid, "net"), "ip", "-j", "link", "show", "dev",
                        server_port(index)], "port state", check=False)
    if result.returncode != 0:
        return False
    links = json.loads(result.output or "[]")
    return bool(links) and "UP" in links[0].get("flags", [])
