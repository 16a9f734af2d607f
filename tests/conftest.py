"""Fixtures for every suite: which Heketi a test talks to.

- `heketi_backend` ("real" or "sim"): a test (or fixture) that asks for it runs twice, once
  against the real Heketi and once against the simulator. The run ends with a line per
  backend counting what ran on it.
- `real_heketi` (session): a real Heketi v10.3.0 with its mock executor (devtools/heketi_real:
  3 nodes x 3 devices of 1024 GiB, admin and user keys, BoltDB in a temporary directory),
  started once for the run and stopped at its end; or, with `HEKETI_TEST_URL` set, the Heketi
  it names (and `HEKETI_TEST_ADMIN_KEY`, `HEKETI_TEST_USER_KEY`). Without the built binary the
  tests that need it FAIL, saying how to build it (`python -m devtools.k8s build heketi`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from devtools.heketi_real import HeketiNotBuilt, RealHeketi, RealHeketiConfig, RealHeketiError
from devtools.heketi_sim.testing import Endpoint, env_endpoint

BACKENDS = ("real", "sim")
_backend_of: dict[str, str] = {}
_ran: set[str] = set()
_outcome: dict[str, str] = {}  # test id -> passed | failed | skipped (the worst phase)
_sim_only: dict[str, str] = {}  # test id -> why, for tests marked @pytest.mark.sim_only(why)


@pytest.fixture(params=BACKENDS)
def heketi_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(scope="session")
def real_heketi() -> Iterator[Endpoint]:
    endpoint = env_endpoint()
    if endpoint is not None:
        yield endpoint
        return
    heketi = RealHeketi(RealHeketiConfig(load_with_cli=False))
    try:
        heketi.start()
    except HeketiNotBuilt as exc:
        pytest.fail(str(exc), pytrace=False)
    except RealHeketiError as exc:
        pytest.fail(f"the real Heketi did not start: {exc}", pytrace=False)
    try:
        yield heketi
    finally:
        heketi.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("heketi_backend") if callspec else None
        if backend in BACKENDS:
            _backend_of[item.nodeid] = backend
        marker = item.get_closest_marker("sim_only")
        if marker is not None:
            _sim_only[item.nodeid] = str(marker.args[0]) if marker.args else "(no reason)"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _ran.add(report.nodeid)
    backend = _backend_of.get(report.nodeid)
    if backend is None:
        return
    if report.failed:
        _outcome[report.nodeid] = "failed"
    elif report.skipped and _outcome.get(report.nodeid) != "failed":
        _outcome[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed:
        _outcome[report.nodeid] = "passed"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran_sim_only = Counter(why for n, why in _sim_only.items() if n in _ran)
    if ran_sim_only:
        terminalreporter.write_line(f"simulator only, not run on the real Heketi: "
                                    f"{sum(ran_sim_only.values())} tests")
        for why, count in sorted(ran_sim_only.items()):
            terminalreporter.write_line(f"  {count} x {why}")
    if not _outcome:
        return
    for backend in BACKENDS:
        counts = Counter(o for n, o in _outcome.items() if _backend_of[n] == backend)
        text = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped"))
        where = "real Heketi v10.3.0 (mock executor)" if backend == "real" else "simulator"
        terminalreporter.write_line(f"heketi backend {backend:4} [{where}]: {text}")
