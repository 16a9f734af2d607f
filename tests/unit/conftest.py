"""Fixtures shared by the node's unit tests: a kubelet root and the in-memory mounter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fake_mounter import FakeMounter


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "kubelet"


@pytest.fixture
def fake() -> Iterator[FakeMounter]:
    mounter = FakeMounter()
    yield mounter
    mounter.close()
