"""A pool of GlusterFS servers on this machine, each glusterd in namespaces of its own.

`pool.py` is the API (`GlusterPool`), `__main__.py` the CLI (`python -m devtools.gluster_pool
up|down|status|...`), `processes.py` the namespaces and their processes, `network.py` the
switch and veths, `bricks.py` the XFS images on loop devices, `gluster.py` the CLI inside a
server, `state.py` the state directory; `reaper.py` (PID 1 of a server) and `writer.py` (a
counter writer for fault tests) run as scripts.
"""

from devtools.gluster_pool.pool import GlusterPool, PoolConfig, VolumeInfo
from devtools.gluster_pool.processes import PoolError

__all__ = ["GlusterPool", "PoolConfig", "PoolError", "VolumeInfo"]
