"""Off-loop stat with a timeout and one call in flight per path."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time

import pytest

from services.node.fsstat import FsProbe, PathMissing, Usage
from services.node.offloop import Lane
from tests.support.conditions import until

USAGE = Usage(100, 40, 60, 10, 4, 6)


class Hanging:
    """A fake statvfs: hangs for the paths in `hang` until released, counts calls."""

    def __init__(self, hang: set[str]) -> None:
        self.hang = hang
        self.calls: dict[str, int] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, path: str) -> Usage:
        with self.lock:
            self.calls[path] = self.calls.get(path, 0) + 1
        if path in self.hang:
            self.release.wait(30)
        if path.endswith("enotconn"):
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        if path.endswith("estale"):
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        if path.endswith("missing"):
            raise FileNotFoundError(errno.ENOENT, "missing")
        return USAGE


async def test_hung_path_is_abnormal_promptly_and_does_not_pile_up_threads():
    fake = Hanging({"/hung"})
    probe = FsProbe(0.2, fake)
    threads_before = threading.active_count()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(probe.probe("/hung") for _ in range(20)))
        elapsed = time.monotonic() - started
        assert elapsed < 1.5
        assert all(not r.healthy and "did not answer within" in (r.abnormal or "") for r in results)
        # Kubelet polls again while the first call still hangs: it joins the same call.
        again = await probe.probe("/hung")
        assert not again.healthy
        assert fake.calls["/hung"] == 1
        assert threading.active_count() - threads_before <= 1
        # Another path is not held up by the hung one.
        ok = await probe.probe("/fine")
        assert ok.healthy and ok.usage == USAGE
    finally:
        fake.release.set()
    await until(lambda: probe.in_flight() == 0, "the hung call returned", 5, 0.01)
    # Once the hung call returned, the next call starts a fresh one.
    assert (await probe.probe("/hung")).healthy
    assert fake.calls["/hung"] == 2


async def test_concurrent_callers_share_one_call():
    fake = Hanging({"/slow"})
    lane = Lane("test", 4)
    tasks = [
        asyncio.create_task(lane.run("/slow", lambda: fake("/slow"), 5, share=True))
        for _ in range(10)
    ]
    await until(lambda: "/slow" in fake.calls, "the shared call started", 5, 0.01)
    assert lane.in_flight() == 1
    fake.release.set()
    results = await asyncio.gather(*tasks)
    assert results == [USAGE] * 10
    assert fake.calls["/slow"] == 1


async def test_a_cancelled_caller_does_not_cancel_the_others():
    fake = Hanging({"/slow"})
    lane = Lane("test", 4)
    first = asyncio.create_task(lane.run("/slow", lambda: fake("/slow"), 5, share=True))
    second = asyncio.create_task(lane.run("/slow", lambda: fake("/slow"), 5, share=True))
    await until(lambda: "/slow" in fake.calls, "the shared call started", 5, 0.01)
    first.cancel()
    fake.release.set()
    assert await second == USAGE


async def test_existence_of_a_path(tmp_path):
    probe = FsProbe(0.2, Hanging(set()))
    assert await probe.exists(str(tmp_path)) is True
    assert await probe.exists(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    "path, code", [("/x/enotconn", errno.ENOTCONN), ("/x/estale", errno.ESTALE)]
)
async def test_broken_mount_errors_are_abnormal_conditions(path, code):
    result = await FsProbe(1, Hanging(set())).probe(path)
    assert not result.healthy
    assert result.errno == code
    assert os.strerror(code) in (result.abnormal or "")


async def test_missing_path_raises():
    with pytest.raises(PathMissing):
        await FsProbe(1, Hanging(set())).probe("/x/missing")


async def test_real_statvfs_of_a_directory(tmp_path):
    result = await FsProbe(5).probe(str(tmp_path))
    assert result.healthy and result.usage is not None
    assert result.usage.total_bytes > 0
    assert result.usage.used_bytes + result.usage.available_bytes <= result.usage.total_bytes
