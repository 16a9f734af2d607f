"""Parsing Heketi's JSON, building requests, classifying errors, the throttling limiter."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.controller.heketi import (
    Durability,
    HeketiBadRequest,
    HeketiClient,
    HeketiOperationFailed,
    Snapshot,
    VolumeCreateRequest,
    VolumeInfo,
)
from services.controller.heketi.errors import error_for
from services.controller.heketi.limiter import OpLimiter

VOLUME = {
    "size": 1, "name": "vol_a", "cluster": "c" * 32, "id": "a" * 32,
    "durability": {"type": "replicate", "replicate": {"replica": 3}, "disperse": {}},
    "snapshot": {"enable": True, "factor": 1.5}, "gid": 2001,
    "glustervolumeoptions": ["", "client.ssl on"],
    "mount": {"glusterfs": {"hosts": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                            "device": "10.0.0.1:vol_a",
                            "options": {"backup-volfile-servers": "10.0.0.2,10.0.0.3"}}},
    "blockinfo": {},
    "bricks": [{"id": "b" * 32, "path": "/var/lib/heketi/mounts/vg_x/brick_b/brick",
                "size": 1048576, "node": "n" * 32, "device": "d" * 32, "volume": "a" * 32}],
}


def test_volume_info_from_heketi_json() -> None:
    info = VolumeInfo.from_json(VOLUME)
    assert info.id == "a" * 32 and info.name == "vol_a" and info.size_gib == 1
    assert info.durability == Durability.replicate(3)
    assert info.snapshot == Snapshot(enable=True, factor=1.5)
    assert info.gid == 2001
    assert info.gluster_volume_options == ("client.ssl on",)
    assert info.mount.device == "10.0.0.1:vol_a"
    assert info.mount.hosts == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert info.mount.backup_volfile_servers == ("10.0.0.2", "10.0.0.3")
    assert info.mount.mount_options() == ["backup-volfile-servers=10.0.0.2:10.0.0.3"]
    assert info.bricks[0].size_kib == 1048576
    assert info.raw_size_kib == 1048576


def test_volume_info_defaults_for_missing_fields() -> None:
    info = VolumeInfo.from_json({"id": "a" * 32, "name": "v", "size": 2})
    assert info.gid == 0
    assert info.durability.type == "none"
    assert info.mount.mount_options() == []
    assert info.bricks == ()


@pytest.mark.parametrize("bad", [
    {"id": "a" * 32, "name": "v", "size": "1"},
    {"id": "a" * 32, "name": "v", "bricks": {}},
    {"id": "a" * 32, "name": 5},
    {"name": "v"},
])
def test_volume_info_rejects_wrong_types(bad: dict[str, object]) -> None:
    with pytest.raises(HeketiOperationFailed):
        VolumeInfo.from_json(bad)


def test_create_request_json() -> None:
    req = VolumeCreateRequest(size_gib=5, name="pvc_1", clusters=("c" * 32,),
                              durability=Durability.disperse(4, 2), gid=2001,
                              gluster_volume_options=("client.ssl on",),
                              snapshot=Snapshot(True, 2.0))
    req.validate()
    assert req.to_json() == {
        "size": 5, "name": "pvc_1", "clusters": ["c" * 32],
        "durability": {"type": "disperse", "disperse": {"data": 4, "redundancy": 2}},
        "gid": 2001, "glustervolumeoptions": ["client.ssl on"],
        "snapshot": {"enable": True, "factor": 2.0},
    }
    assert VolumeCreateRequest(size_gib=1).to_json() == {"size": 1}


@pytest.mark.parametrize("req", [
    VolumeCreateRequest(size_gib=0),
    VolumeCreateRequest(size_gib=1, name="has space"),
    VolumeCreateRequest(size_gib=1, name="a/b"),
    VolumeCreateRequest(size_gib=1, clusters=("nothex",)),
    VolumeCreateRequest(size_gib=1, durability=Durability("mirror")),
    VolumeCreateRequest(size_gib=1, durability=Durability.replicate(4)),
    VolumeCreateRequest(size_gib=1, durability=Durability.disperse(3, 1)),
    VolumeCreateRequest(size_gib=1, gid=2**31 - 1),
    VolumeCreateRequest(size_gib=1, gid=-1),
    VolumeCreateRequest(size_gib=1, snapshot=Snapshot(True, 0.5)),
])
def test_create_request_validation(req: VolumeCreateRequest) -> None:
    with pytest.raises(HeketiBadRequest):
        req.validate()


@pytest.mark.parametrize(("status", "text", "cls"), [
    (404, "Id not found", NotFound),
    (400, "Invalid volume size", InvalidArgument),
    (422, "request unable to be parsed", InvalidArgument),
    (401, "Invalid JWT token: signature is invalid", Unauthenticated),
    (401, "Administrator access required", PermissionDenied),
    (409, "Cannot delete a block hosting volume containing block volumes", FailedPrecondition),
    (429, "Server busy. Retry operation later.", Unavailable),
    (503, "Service disabled for maintenance", Unavailable),
    (502, "Bad Gateway", Unavailable),
    (500, "Failed to allocate new volume: No space", ResourceExhausted),
    (500, "Failed to allocate new volume: Cluster has 1000 volumes and limit is 1000",
     ResourceExhausted),
    (500, "Failed to allocate new volume: Volume name 'x' already in use", AlreadyExists),
    (500, "Failed to set up volume delete: The target exists, contains other items, "
          "or is in use.", Aborted),
    (500, "Unable to create snapshot of volume v: failed", Internal),
    # What a real Heketi v10 answers when an expansion does not fit.
    (500, "Failed to allocate volume expansion: Maximum number of bricks reached.",
     ResourceExhausted),
    # A GlusterFS server is down (gluster's words through Heketi): retryable, not INTERNAL.
    (500, "All 2 hosts: Unable to delete volume vol_x: volume delete: vol_x: failed: Some "
          "of the peers are down", Unavailable),
    (500, "Unable to execute command on glusterfs-abc: volume create: vol_y: failed: Host "
          "10.231.3.11 not connected", Unavailable),
    (500, "no hosts available (3 total)", Unavailable),
    (500, "All 3 hosts: Unable to delete volume v: Commit failed on 10.231.3.13. Please check "
          "log file for details.", Unavailable),
    # Statuses Heketi does not send (a proxy in front of it might): retryable, never final.
    (405, "Method Not Allowed", Unavailable),
    (418, "I'm a teapot", Unavailable),
    (302, "", Unavailable),
])
def test_error_classification(status: int, text: str, cls: type[Exception]) -> None:
    error = error_for("east", "create volume", status, text)
    assert isinstance(error, cls)
    assert "'east'" in str(error) and text in str(error)


def test_no_unknown_status_is_invalid_argument() -> None:
    for status in range(100, 600):
        if status in (400, 422):
            continue
        error = error_for("east", "create volume", status, "text")
        assert not isinstance(error, InvalidArgument), status


def test_client_repr_hides_the_key() -> None:
    client = HeketiClient("http://heketi:8080", "admin", "s3cret-key", name="east")
    assert "s3cret-key" not in repr(client)
    assert "s3cret-key" not in repr(vars(client))


# --- the throttling limiter -----------------------------------------------------------


async def test_limiter_admits_up_to_limit_then_queues_fifo() -> None:
    limiter = OpLimiter(2)
    await limiter.acquire()
    await limiter.acquire()
    order: list[str] = []

    async def wait(label: str, front: bool = False) -> None:
        await limiter.acquire(front=front)
        order.append(label)

    tasks = [asyncio.create_task(wait("a")), asyncio.create_task(wait("b"))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("retry", front=True)))
    await asyncio.sleep(0)
    assert order == []
    limiter.release()
    limiter.release()
    await asyncio.sleep(0)
    assert order == ["retry", "a"]
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == ["retry", "a", "b"]


async def test_limiter_drops_to_accepted_on_429_and_grows_back() -> None:
    limiter = OpLimiter(8)
    limiter.accepted = 3
    limiter.throttled()
    assert limiter.limit == 3
    for _ in range(3):
        limiter.succeeded()
    assert limiter.limit == 3  # about one more slot per `limit` successes
    limiter.succeeded()
    assert limiter.limit == 4
    for _ in range(100):
        limiter.succeeded()
    assert limiter.limit == 8
    limiter.accepted = 0
    limiter.throttled()
    assert limiter.limit == 1


async def test_limiter_cancelled_waiter_gives_no_slot_away() -> None:
    limiter = OpLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_use == 0
    await limiter.acquire()
    assert limiter.in_use == 1


async def test_a_refused_user_is_not_echoed() -> None:
    client = HeketiClient("http://heketi:8080", "s3cret-user", "k")
    try:
        with pytest.raises(PermissionDenied) as err:
            await client.delete_volume("a" * 32)
        assert "s3cret-user" not in str(err.value)
        assert "s3cret-user" not in repr(client)
    finally:
        await client.close()


def test_urls_with_credentials_are_refused_without_echo() -> None:
    for url in ("http://admin:s3cret@heketi:8080", "http://heketi:8080/?k=s3cret",
                "ftp://heketi/s3cret"):
        with pytest.raises(ValueError) as err:
            HeketiClient(url, "admin", None)
        assert "s3cret" not in str(err.value)
