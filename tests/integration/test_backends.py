"""More than one Heketi: configured backends from a file, and ad-hoc ones from resturl."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess, wait_ready
from services.common.proto import csi_grpc, csi_pb2
from services.controller.ids import backend_token_for_url
from tests.support.controller_harness import cap, create_request, our_volumes


@pytest.fixture
async def two_sims():
    async with HeketiSimulator(op_latency=INSTANT, admin_key="key-east") as east, \
            HeketiSimulator(op_latency=INSTANT, admin_key="key-west") as west:
        yield east, west


async def test_backends_file_routes_each_volume_to_its_heketi(tmp_path: Path, two_sims):
    east, west = two_sims
    (tmp_path / "east.key").write_text("key-east\n")
    (tmp_path / "west.key").write_text("key-west\n")
    backends = tmp_path / "backends.yaml"
    backends.write_text(yaml.safe_dump([
        {"name": "east", "url": east.url, "key_file": str(tmp_path / "east.key")},
        {"name": "west", "url": west.url, "key_file": str(tmp_path / "west.key")},
    ]))
    sock = tmp_path / "csi.sock"
    proc = ManagedProcess("controller", [
        *HEKETI_CSI, "controller", "--endpoint", f"unix://{sock}", "--backends-file",
        str(backends), "--node-check", "none", "--log-format", "json"], tmp_path / "ctl.log")
    await proc.start()
    channel = Channel(path=str(sock))
    stub = csi_grpc.ControllerStub(channel)
    try:
        await wait_ready(proc, sock)
        a = (await stub.CreateVolume(create_request("pvc-east", resturl=east.url))).volume
        b = (await stub.CreateVolume(create_request("pvc-west", resturl=west.url))).volume
        assert a.volume_id.startswith("hv1:east:") and b.volume_id.startswith("hv1:west:")
        assert len(our_volumes(east)) == 1 and len(our_volumes(west)) == 1

        with pytest.raises(GRPCError) as err:  # two backends and no resturl: which one?
            await stub.CreateVolume(create_request("pvc-where"))
        assert err.value.status is Status.INVALID_ARGUMENT
        assert "resturl" in (err.value.message or "")

        listed = await stub.ListVolumes(csi_pb2.ListVolumesRequest())
        assert {e.volume.volume_id for e in listed.entries} == {a.volume_id, b.volume_id}

        await stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=b.volume_id))
        assert len(our_volumes(east)) == 1 and not our_volumes(west)
    finally:
        channel.close()
        await proc.stop()


async def test_adhoc_backend_uses_the_request_secrets(tmp_path: Path, two_sims):
    configured, other = two_sims
    (tmp_path / "k").write_text("key-east")
    sock = tmp_path / "csi.sock"
    proc = ManagedProcess("controller", [
        *HEKETI_CSI, "controller", "--endpoint", f"unix://{sock}", "--heketi-url",
        configured.url, "--heketi-key-file", str(tmp_path / "k"), "--node-check", "none",
        "--adhoc-heketi-urls", f"http://unrelated:8080,{other.url}/",
        "--log-format", "json"], tmp_path / "ctl.log")
    await proc.start()
    channel = Channel(path=str(sock))
    stub = csi_grpc.ControllerStub(channel)
    try:
        await wait_ready(proc, sock)
        request = create_request("pvc-adhoc", resturl=other.url)
        with pytest.raises(GRPCError) as err:  # no key for that Heketi
            await stub.CreateVolume(request)
        assert err.value.status is Status.UNAUTHENTICATED
        assert not our_volumes(other)

        request.secrets["key"] = "key-west"
        volume = (await stub.CreateVolume(request)).volume
        assert volume.volume_id.startswith("hv1:@")
        assert len(our_volumes(other)) == 1 and not our_volumes(configured)

        # Later calls carry only the id and the secrets: the id finds the same Heketi.
        grow = csi_pb2.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id, secrets={"key": "key-west"},
            capacity_range=csi_pb2.CapacityRange(required_bytes=3 << 30))
        assert (await stub.ControllerExpandVolume(grow)).capacity_bytes == 3 << 30
        await stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(
            volume_id=volume.volume_id, secrets={"key": "key-west"}))
        assert not our_volumes(other)
    finally:
        channel.close()
        await proc.stop()


async def test_only_configured_or_allowed_heketis_are_ever_contacted(tmp_path: Path, two_sims):
    configured, other = two_sims
    (tmp_path / "k").write_text("key-east")
    sock = tmp_path / "csi.sock"
    proc = ManagedProcess("controller", [
        *HEKETI_CSI, "controller", "--endpoint", f"unix://{sock}", "--heketi-url",
        configured.url, "--heketi-key-file", str(tmp_path / "k"), "--node-check", "none",
        "--log-format", "json"], tmp_path / "ctl.log")
    await proc.start()
    channel = Channel(path=str(sock))
    stub = csi_grpc.ControllerStub(channel)
    try:
        await wait_ready(proc, sock)
        # A StorageClass naming a Heketi the controller was not told about.
        request = create_request("pvc-elsewhere", resturl=other.url)
        request.secrets["key"] = "key-west"
        with pytest.raises(GRPCError) as err:
            await stub.CreateVolume(request)
        assert err.value.status is Status.INVALID_ARGUMENT
        assert "--adhoc-heketi-urls" in (err.value.message or "")
        # Crafted volume ids naming that Heketi (or something that is no Heketi URL at all).
        elsewhere = backend_token_for_url(other.url)
        not_http = backend_token_for_url("ftp://127.0.0.1:21")
        secrets = {"key": "key-west"}
        for token in (elsewhere, not_http):
            vid = f"hv1:{token}:{'0' * 32}"
            delete = csi_pb2.DeleteVolumeRequest(volume_id=vid, secrets=secrets)
            if token == not_http:  # cannot be an id of ours: nothing to delete
                await stub.DeleteVolume(delete)
            else:
                with pytest.raises(GRPCError) as err:
                    await stub.DeleteVolume(delete)
                assert err.value.status is Status.NOT_FOUND
                assert "--adhoc-heketi-urls" in (err.value.message or "")
            calls = [
                stub.ControllerPublishVolume(csi_pb2.ControllerPublishVolumeRequest(
                    volume_id=vid, node_id="n", volume_capability=cap(), secrets=secrets)),
                stub.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
                    volume_id=vid, secrets=secrets,
                    capacity_range=csi_pb2.CapacityRange(required_bytes=2 << 30))),
                stub.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
                    name="s", source_volume_id=vid, secrets=secrets)),
            ]
            for call in calls:
                with pytest.raises(GRPCError) as err:
                    await call
                assert err.value.status is Status.NOT_FOUND, err.value
        assert sum(other.request_counts.values()) == 0, "no request may reach that Heketi"
    finally:
        channel.close()
        await proc.stop()
