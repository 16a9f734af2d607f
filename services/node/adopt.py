"""What a starting node process finds: the mounts and gluster clients its predecessor left.

The clients outlive the node container (`clients.py`), and a node process can die at any
point of a stage or an unstage. Before it serves a single call, a new node process squares
the state records with the mount table and the client groups:

- a record whose staging mount is there: its clients are adopted (followed, `watch.py`); a
  dead one is re-mounted by the start-up health pass;
- a record whose stage is gone but whose publish targets are mounted: kept for the health
  pass, which mounts the volume again and re-binds them;
- a record with nothing of it mounted: a stage that never finished, or an unstage that did
  not. What is left in its client group (an unfinished mount helper, a client whose mount
  went) is killed, and the record dropped: kubelet retries an unfinished stage;
- a client group without a record: ended, unless a member still serves a mount at the
  staging path it is named after (a stage made before records were kept: kubelet's next
  stage adopts it, its unstage removes it).

So no client is started twice for one staging path, and none is left without an owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.logging import get_logger
from services.node import mountinfo
from services.node.mounter import Mounter
from services.node.mountinfo import GLUSTER_FSTYPE, Mount
from services.node.mountopts import volume_of_source
from services.node.state import StageRecord, StateStore, stage_key
from services.node.watch import ClientWatch

_log = get_logger("node.adopt")


@dataclass
class Adoption:
    adopted: dict[str, list[int]] = field(default_factory=dict)  # staging path -> clients
    kept: list[str] = field(default_factory=list)  # records left to the health pass
    dropped: list[str] = field(default_factory=list)  # records with nothing mounted
    ended: list[str] = field(default_factory=list)  # client groups ended


def _serves(mount: Mount | None, record: StageRecord) -> bool:
    return (
        mount is not None
        and mount.fstype == GLUSTER_FSTYPE
        and volume_of_source(mount.source) == volume_of_source(record.source)
    )


async def adopt(store: StateStore, mounter: Mounter, watch: ClientWatch) -> Adoption:
    found = Adoption()
    for record in store.all():
        staging = record.staging_path
        if await _adopt_one(record, mounter, watch, found):
            continue
        await mounter.end_group(stage_key(staging), 0)
        if _serves(mountinfo.mount_at(mounter.mounts(), staging), record):
            found.kept.append(staging)  # an unfinished mount finished meanwhile (dead now)
            continue
        await store.delete(staging)
        found.dropped.append(staging)
        _log.info("dropped the record of a stage with nothing mounted", staging_path=staging,
                  volume_id=record.volume_id)
    recorded = {stage_key(r.staging_path) for r in store.all()}
    live = {stage_key(m.mount_point) for m in mounter.mounts() if m.fstype == GLUSTER_FSTYPE}
    for group in await mounter.groups():
        if group in recorded:
            continue
        if group in live:
            _log.warning("a gluster client serves a staging path the node has no record of; "
                         "kubelet's next stage or unstage of it decides", group=group)
            continue
        await mounter.end_group(group, 0)
        found.ended.append(group)
        _log.info("ended a client group without a record or a mount", group=group)
    _log.info("adopted the node's mounts", adopted=len(found.adopted), kept=len(found.kept),
              dropped=len(found.dropped), ended=len(found.ended),
              clients=sorted(p for pids in found.adopted.values() for p in pids))
    return found


async def _adopt_one(
    record: StageRecord, mounter: Mounter, watch: ClientWatch, found: Adoption
) -> bool:
    """True when something of `record` is mounted (adopted or kept for the health pass)."""
    mounts = mounter.mounts()
    staging = record.staging_path
    stage = mountinfo.mount_at(mounts, staging)
    if _serves(stage, record):
        found.adopted[staging] = await watch.follow(staging)
        return True
    if stage is not None:  # something else is mounted there: the repairer warns about it
        found.kept.append(staging)
        return True
    if any(_serves(mountinfo.mount_at(mounts, t), record) for t in record.targets):
        found.kept.append(staging)
        return True
    return False
