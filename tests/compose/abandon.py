"""A demo that fails half-way (tests/compose/failing-demo.yml runs it as the demo service).

It creates a volume, attaches it, stages it (a FUSE mount by the node), publishes it into a
pod and writes there, then exits with ABANDONED without undoing anything: what a demo that
crashed leaves behind. The compose test checks that `python -m devtools.compose test` still
leaves nothing: no mount in the kubelet directory, no gluster volume, no brick.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from devtools.csi_client import GIB, CsiClient
from devtools.localcluster import KubeletPaths

ABANDONED = 3
READY_WITHIN = 120.0


async def abandon() -> int:
    async with CsiClient(os.environ["CSI_CONTROLLER_ENDPOINT"]) as ctl, \
            CsiClient(os.environ["CSI_NODE_ENDPOINT"]) as node:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            try:
                if await ctl.probe() and await node.probe():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                print("the driver did not become ready", file=sys.stderr)
                return 1
            await asyncio.sleep(1.0)
        info = await node.node_info()
        driver = (await node.plugin_info()).name
        paths = KubeletPaths(Path(os.environ["KUBELET_ROOT"]), driver)
        volume = await ctl.create_volume("pvc-abandoned", GIB)
        context = await ctl.controller_publish(volume.volume_id, info.node_id)
        staging = paths.staging_path(volume.volume_id)
        await node.stage(volume.volume_id, staging, volume_context=volume.volume_context,
                         publish_context=context)
        target = paths.pod_target_path("pod-abandoned", "pvc-abandoned")
        await node.publish(volume.volume_id, staging, target,
                           volume_context=volume.volume_context, publish_context=context)
        (target / "left-behind.txt").write_text("nobody unpublishes this\n")
        print(f"abandoned {volume.volume_id}: staged at {staging}, published at {target}")
    return ABANDONED


if __name__ == "__main__":
    sys.exit(asyncio.run(abandon()))
