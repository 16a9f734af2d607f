"""`heketi-csi migrate`: take over in-tree `kubernetes.io/glusterfs` PVs without copying data.

`plan` reads the cluster and Heketi and changes nothing; `apply` moves the chosen claims to
CSI PVs of this driver; `rollback` undoes that for a claim. Every step is journaled on the
Kubernetes objects themselves (annotations, `journal.py`), so running the command again
resumes whatever a crash or Ctrl-C interrupted. The procedure for administrators is in
docs/migrate.md.
"""
