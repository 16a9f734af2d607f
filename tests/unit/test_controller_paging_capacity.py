"""Pagination tokens and capacity arithmetic."""

from __future__ import annotations

import pytest

from services.common.errors import Aborted, InvalidArgument, OutOfRange
from services.common.proto import csi_pb2
from services.controller.capabilities import GIB, capability_problem, fits, size_gib
from services.controller.pagination import paginate

ITEMS = [(f"id{i:02d}", i) for i in range(7)]


def test_pages_cover_everything_once_in_order():
    seen, token = [], ""
    while True:
        page, token = paginate(ITEMS, 3, token)
        seen.extend(v for _, v in page)
        if not token:
            break
    assert seen == list(range(7))


def test_token_survives_deletion_of_the_last_returned_entry():
    page, token = paginate(ITEMS, 3, "")
    remaining = [item for item in ITEMS if item[0] != page[-1][0]]
    page2, _ = paginate(remaining, 3, token)
    assert [v for _, v in page2] == [3, 4, 5]


def test_zero_means_all_and_bad_inputs_are_refused():
    assert paginate(ITEMS, 0, "")[1] == ""
    with pytest.raises(Aborted):
        paginate(ITEMS, 2, "garbage")
    with pytest.raises(InvalidArgument):
        paginate(ITEMS, -1, "")


def rng(required=0, limit=0):
    return csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)


def test_sizes_round_up_to_whole_gib():
    assert size_gib(rng(), False) == 1
    assert size_gib(rng(1), True) == 1
    assert size_gib(rng(GIB + 1), True) == 2
    assert size_gib(rng(0, 5 * GIB), True) == 1
    assert size_gib(rng(3 * GIB, 3 * GIB), True) == 3


def test_impossible_ranges_are_out_of_range():
    with pytest.raises(OutOfRange):
        size_gib(rng(10, 100), True)
    with pytest.raises(OutOfRange):
        size_gib(rng(GIB + 1, GIB + 100), True)
    with pytest.raises(OutOfRange):
        size_gib(rng(5 * GIB, 4 * GIB), True)


def test_fits_checks_both_bounds():
    assert fits(2, rng(2 * GIB), True)
    assert not fits(1, rng(2 * GIB), True)
    assert not fits(3, rng(0, 2 * GIB), True)


def test_block_capability_is_refused_with_a_reason():
    cap = csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume())
    assert "block" in (capability_problem(cap) or "")
    ok = csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(),
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))
    assert capability_problem(ok) is None
