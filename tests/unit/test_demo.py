"""The demo's play against a driver that does not implement one RPC: the demo fails there,
says which RPC, and still undoes what the earlier steps made; and the output check the demo
tests share (tests/support/demo_output.py) refuses such a run."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any, cast

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools import compose
from devtools.csi_client import GIB, CsiClient
from devtools.demo import Demo, Reporter, RunningDriver, play_and_unwind
from devtools.localcluster import KubeletPaths
from services.common.proto import csi_pb2
from tests.support.demo_output import demo_problems, pool_problems


class FakeController:
    """Answers like the controller, except CreateSnapshot: UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def create_volume(self, name: str, size: int, **_: Any) -> csi_pb2.Volume:
        self.calls.append("create")
        return csi_pb2.Volume(volume_id=f"id-{name}", capacity_bytes=size,
                              volume_context={"volume": name})

    async def delete_volume(self, volume_id: str) -> None:
        self.calls.append("delete")

    async def controller_publish(self, volume_id: str, node_id: str) -> dict[str, str]:
        self.calls.append("publish")
        return {"hosts": "h"}

    async def controller_unpublish(self, volume_id: str, node_id: str) -> None:
        self.calls.append("unpublish")

    async def expand_volume(self, volume_id: str,
                            size: int) -> csi_pb2.ControllerExpandVolumeResponse:
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=size)

    async def get_volume(self, volume_id: str) -> csi_pb2.ControllerGetVolumeResponse:
        return csi_pb2.ControllerGetVolumeResponse(
            volume=csi_pb2.Volume(volume_id=volume_id, capacity_bytes=2 * GIB))

    async def create_snapshot(self, name: str, volume_id: str) -> csi_pb2.Snapshot:
        raise GRPCError(Status.UNIMPLEMENTED, "Method not implemented")


class FakeNode:
    """Stage makes a directory and publish links each pod's target to it (no mounts)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def stage(self, volume_id: str, staging: Path, **_: Any) -> None:
        self.calls.append("stage")
        await asyncio.to_thread(staging.mkdir, parents=True)

    async def unstage(self, volume_id: str, staging: Path) -> None:
        self.calls.append("unstage")

    async def publish(self, volume_id: str, staging: Path, target: Path, **_: Any) -> None:
        self.calls.append("publish")
        await asyncio.to_thread(target.symlink_to, staging)  # the pods share the volume

    async def unpublish(self, volume_id: str, target: Path) -> None:
        self.calls.append("unpublish")

    async def volume_stats(self, volume_id: str,
                           path: Path) -> csi_pb2.NodeGetVolumeStatsResponse:
        return csi_pb2.NodeGetVolumeStatsResponse()


async def test_an_unimplemented_rpc_fails_the_demo_and_the_cleanup_still_runs(
        tmp_path: Path) -> None:
    ctl, node, out = FakeController(), FakeNode(), io.StringIO()
    target = RunningDriver("node-1", KubeletPaths(tmp_path / "kubelet"))
    demo = Demo(target, cast(CsiClient, ctl), cast(CsiClient, node), Reporter(out))
    failure = await play_and_unwind(demo)
    text = out.getvalue()
    assert failure is not None, text
    assert "CreateSnapshot" in str(failure) and "UNIMPLEMENTED" in str(failure)
    fail_lines = [line for line in text.splitlines() if line.startswith("[FAIL]")]
    assert len(fail_lines) == 1 and "CreateSnapshot" in fail_lines[0], text
    assert "does not implement" in fail_lines[0]
    assert "[skip]" not in text
    # what the steps before it made is undone, newest first
    assert node.calls == ["stage", "publish", "publish", "unpublish", "unpublish", "unstage"]
    assert ctl.calls == ["create", "publish", "unpublish", "delete"]
    problems = demo_problems(text)
    assert "the output says '[FAIL]'" in problems
    assert "the output says 'UNIMPLEMENTED'" in problems
    assert "0 [ ok ] line(s) with 'CreateSnapshot snapshot-', expected 1" in problems


def test_the_output_check_accepts_only_a_whole_play() -> None:
    assert demo_problems("") != []
    skipped = "[skip]  9. CreateSnapshot snapshot-1  needs x\nDemo finished: exit 0.\n"
    assert "the output says '[skip]'" in demo_problems(skipped)


def test_the_compose_log_yields_the_demo_containers_own_lines(tmp_path: Path) -> None:
    log = tmp_path / "compose.log"
    log.write_text("Attaching to hcsi-compose_demo_1, hcsi-compose_node_1\n"
                   "node_1        | rpc code=OK\n"
                   "demo_1        | [ ok ]  1. CreateVolume pvc-1 (1 GiB)   0.50 s  1 GiB\n"
                   "demo_1        | \n"
                   "demo_1        | Demo finished: exit 0.\n")
    observed = compose.Observed(demo_exit=0, compose_exit=0, log=log, stack_volumes=[],
                                mounts=[], loop_devices=[], host_volumes=None)
    assert compose.demo_output(observed) == ("[ ok ]  1. CreateVolume pvc-1 (1 GiB)   0.50 s  "
                                             "1 GiB\n\nDemo finished: exit 0.\n")


def test_the_output_check_wants_three_bricks_on_three_servers() -> None:
    step = ("[ ok ]  2. gluster volume info pvc_x (where the bricks are)   0.10 s  "
            "Replicate, replica 3: 3 bricks on 3 servers")
    rows = [f"         brick {n} on server 10.231.0.1{n}: /b/{n}/brick" for n in (1, 2, 3)]
    assert pool_problems("\n".join([step, *rows])) == []
    one_server = [row.replace("10.231.0.12", "10.231.0.11") for row in rows]
    assert pool_problems("\n".join([step, *one_server])) != []
    assert pool_problems("\n".join([step, *rows[:1]])) != []
    single = step.replace("Replicate, replica 3: 3 bricks on 3 servers",
                          "Distribute: 1 bricks on 1 servers")
    assert pool_problems("\n".join([single, *rows])) != []
    assert any("where the bricks are" in p for p in demo_problems("Demo finished: exit 0."))
    assert not any("bricks" in p for p in demo_problems("Demo finished: exit 0.", pool=False))
