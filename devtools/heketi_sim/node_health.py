"""Heketi's node health monitor, for pool mode: which storage servers are known to be down.

A real Heketi (v10, `apps/glusterfs/health_cache.go`) checks every node's glusterd through
its executor, first 10 s after start and then every 120 s (`start_time_monitor_gluster_nodes`,
`refresh_time_monitor_gluster_nodes`). What it learnt changes two things a client sees:

* placement skips a node known to be down, so a replica 3 volume on a cluster of three nodes
  with one down is `Failed to allocate new volume: No space` (until the next check after the
  server returns);
* commands that may run on any node of the cluster (a volume delete) are not tried on a node
  known to be down.

Between a server's failure and the next check Heketi does not know: it places bricks on the
server and tries commands there. The simulator keeps that window too (it is what users meet).

The check here connects to each server's glusterd port, all at once within one deadline (the
node plugin's own `VolfileProber`): a stopped glusterd, a partitioned or a powered-off server
all count as down, as Heketi's `systemctl status glusterd` through SSH or `kubectl exec` would.
Outside pool mode every storage host is this machine, always up, and no monitor runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from devtools.heketi_sim.model import Topology
from services.node.volfile_servers import VolfileProber

# Heketi's defaults (seconds): the first check after start, then the period.
HEKETI_START_DELAY = 10.0
HEKETI_INTERVAL = 120.0
# Seconds every server together is given to answer a check.
CHECK_DEADLINE = 1.0


class NodeHealthMonitor:
    """Marks each node of `topology` up or down (`Node.up`) from periodic checks.

    `Node.up` is None until a node's first check (Heketi: not in the cache, so not skipped).
    """

    def __init__(self, topology: Topology, start_delay: float = HEKETI_START_DELAY,
                 interval: float = HEKETI_INTERVAL,
                 log: Callable[[str], None] = lambda _line: None) -> None:
        if interval <= 0 or start_delay < 0:
            raise ValueError("the health check needs an interval > 0 and a start delay >= 0")
        self.topology = topology
        self.start_delay = start_delay
        self.interval = interval
        self.checks = 0
        self._log = log
        self._prober = VolfileProber(deadline=CHECK_DEADLINE)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> None:
        """One check of every node (Heketi's Refresh)."""
        hosts = sorted({node.storage for node in self.topology.nodes.values()})
        ordering = await self._prober.order(hosts)
        down = {skipped.server: skipped.reason for skipped in ordering.skipped}
        for node in self.topology.nodes.values():
            up = node.storage not in down
            if node.up is not None and node.up != up:
                state = "up" if up else f"down ({down[node.storage]})"
                self._log(f"node {node.id} ({node.storage}) is {state}")
            node.up = up
        self.checks += 1

    async def _run(self) -> None:
        await asyncio.sleep(self.start_delay)
        while True:
            await self.check()
            await asyncio.sleep(self.interval)
