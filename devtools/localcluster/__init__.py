"""The local cluster (processes on unix sockets, no Kubernetes): see cluster.py.

`python -m devtools.localcluster` (`make up`) keeps one running until Ctrl-C.
"""

from devtools.localcluster.bridge import BackgroundCluster
from devtools.localcluster.cluster import REPO_ROOT, KubeletPaths, LocalCluster
from devtools.localcluster.processes import ClusterError, ManagedProcess
from devtools.localcluster.teardown import (
    TeardownReport,
    gluster_volumes_with_bricks_under,
    mounts_under,
)

__all__ = ["REPO_ROOT", "BackgroundCluster", "ClusterError", "KubeletPaths", "LocalCluster",
           "ManagedProcess", "TeardownReport", "gluster_volumes_with_bricks_under",
           "mounts_under"]
