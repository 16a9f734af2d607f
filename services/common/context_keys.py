"""Keys of the CSI volume context and publish context that the controller hands the node.

The controller writes them (CreateVolume's `volume_context`, ControllerPublishVolume's
`publish_context`); the node reads them in NodeStageVolume. Both import the names from here.
A migrated in-tree PV carries only `VOLUME` and `HOSTS`.
"""

from __future__ import annotations

# Gluster volume name (what Heketi calls the volume `name`), e.g. "vol_5b8c...".
VOLUME = "volume"
# Comma-separated gluster server hosts; the first is the one the mount fetches the volfile from.
HOSTS = "hosts"
# Comma-separated further volfile servers, tried when the first host does not answer.
BACKUP_VOLFILE_SERVERS = "backupVolfileServers"
# Numeric GID the volume's root belongs to (optional; kubelet adds it to the pod's groups
# through the PV annotation `pv.beta.kubernetes.io/gid`).
GID = "gid"

# Every key above: the only ones ValidateVolumeCapabilities confirms back.
VOLUME_CONTEXT_KEYS = frozenset({VOLUME, HOSTS, BACKUP_VOLFILE_SERVERS, GID})
