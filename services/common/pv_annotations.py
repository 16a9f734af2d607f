"""The annotations `heketi-csi migrate` and the controller write on Kubernetes objects: the
contract between the two (migrate journals a move on the PV it creates; the controller marks
a migrated PV as used when it first attaches it for a pod, so a rollback knows)."""

from __future__ import annotations

PREFIX = "migrate.heketi-csi.io/"
RECLAIM_POLICY = PREFIX + "reclaim-policy"  # the original policy (old PV, then new PV)
FROM_PV = PREFIX + "from-pv"  # on the CSI PV and the new PVC: the in-tree PV's name
ORIGINAL = PREFIX + "original"  # on the CSI PV: JSON of the original objects
STATE = PREFIX + "state"  # on the CSI PV: migrating | done | rolling-back
MIGRATED_AT = PREFIX + "migrated-at"  # on the CSI PV: RFC 3339 time the claim was re-bound
ROLLED_BACK_FROM = PREFIX + "rolled-back-from"  # on a restored in-tree PV
USED_AT = PREFIX + "used-at"  # on the CSI PV, by the controller: first attached for a pod
