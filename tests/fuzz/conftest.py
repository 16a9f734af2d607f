"""The fuzz suite's cluster: one per module, torn down (and checked clean) at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.localcluster import ClusterError
from tests.fuzz.harness import FuzzSession


@pytest.fixture(scope="module")
def fuzz_session() -> Iterator[FuzzSession]:
    try:
        session = FuzzSession.start()
    except ClusterError as exc:
        pytest.fail(f"the fuzz suite's local cluster did not start:\n{exc}", pytrace=False)
    yield session
    report = session.stop()
    if report is not None and not report.clean:
        pytest.fail("the fuzz cluster's teardown left things behind:\n" + report.text(),
                    pytrace=False)
