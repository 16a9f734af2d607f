"""Shared fixtures for the integration tests: one local cluster for the whole session.

    async def test_something(cluster, controller_client, node_client):
        volume = await controller_client.create_volume("pvc-x", GIB)
        try:
            staging = cluster.staging_path(volume.volume_id)
            await node_client.stage(volume.volume_id, staging,
                                    volume_context=dict(volume.volume_context))
            ...
        finally:
            ... unstage, delete ...
        assert await cluster.leftovers() == []   # nothing mounted, no volume left

- `cluster` (session): a started `LocalCluster` (devtools/localcluster/): a GlusterFS pool
  of three servers (`gpdef` on 10.231.8.0/24), the Heketi simulator in pool mode on it
  (replica 3 volumes across the three servers), controller, node, registrar and kubelet
  simulator, all
  real processes. Read its paths, URLs and keys (`controller_socket`, `node_socket`,
  `kubelet_root`, `heketi_url`, `admin_key`, `node_id`, `registration_dir`,
  `registrar_health_url`, `staging_path(volume_id)`, `pod_target_path(pod, pv)`). It is
  shared: delete what you create, and do not leave processes stopped.
- `cluster_runner` (session): the `BackgroundCluster` that runs it in its own thread. Touch
  the cluster's processes through it: `await cluster_runner.acall(cluster.restart("node"))`.
- `controller_client`, `node_client`: a `CsiClient` (devtools/csi_client.py) on each
  socket, per test.
- A test that needs a cluster of its own (other flags, crashing things) uses
  `async with LocalCluster(node_args=[...]) as mine:` directly; it is torn down at the end.

With HEKETI_TEST_URL and HEKETI_TEST_ADMIN_KEY set, the shared cluster's controller talks to
that (real) Heketi instead of the simulator.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.csi_client import CsiClient
from devtools.gluster_pool import PoolConfig
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from devtools.localcluster import BackgroundCluster, ClusterError, LocalCluster
from devtools.localcluster.processes import wait_ready
from tests.support.controller_harness import KEY, Controller, start_controller
from tests.support.heketi_backends import HeketiBackend, open_backend

# The shared cluster's pool: not the default `gpool`, which the clusters that tests start
# for themselves (test_launcher.py, `make up`, the demo, csi-sanity) use while it runs.
SHARED_POOL = PoolConfig(name="gpdef", subnet="10.231.8")


def cluster_options() -> dict[str, Any]:
    """LocalCluster keyword arguments for the shared cluster (a real Heketi from the env)."""
    url = os.environ.get("HEKETI_TEST_URL")
    if url:
        return {"heketi_url": url, "admin_key": os.environ.get("HEKETI_TEST_ADMIN_KEY", "")}
    return {"storage": "pool", "pool": SHARED_POOL, "heketi_op_latency": INSTANT}


@pytest.fixture(scope="session")
def cluster_runner() -> Iterator[BackgroundCluster]:
    runner = BackgroundCluster(**cluster_options())
    try:
        runner.start()
    except ClusterError as exc:
        pytest.fail(f"the local cluster did not start:\n{exc}", pytrace=False)
    yield runner
    report = runner.stop()
    if report is not None and not report.clean:
        pytest.fail("the local cluster's teardown left things behind:\n" + report.text(),
                    pytrace=False)


@pytest.fixture(scope="session")
def cluster(cluster_runner: BackgroundCluster) -> LocalCluster:
    assert cluster_runner.cluster is not None
    return cluster_runner.cluster


@pytest.fixture
async def controller_client(cluster: LocalCluster) -> AsyncIterator[CsiClient]:
    async with CsiClient(cluster.controller_socket) as client:
        yield client


@pytest.fixture
async def node_client(cluster: LocalCluster) -> AsyncIterator[CsiClient]:
    async with CsiClient(cluster.node_socket) as client:
        yield client


# --- controller process against a Heketi (tests/support/controller_harness, heketi_backends)
#
# `heketi`: a fresh real Heketi or a fresh simulator (the test runs on both, see
# tests/support/heketi_backends.py); `sim`: the simulator only, for fault injection and its
# bookkeeping. `ctl` talks to `heketi` when the test asks for it, else to `sim`.


@pytest.fixture
async def heketi(heketi_backend: str) -> AsyncIterator[HeketiBackend]:
    async with open_backend(heketi_backend, KEY) as backend:
        yield backend


@pytest.fixture
async def sim() -> AsyncIterator[HeketiSimulator]:
    async with HeketiSimulator(admin_key=KEY, op_latency=INSTANT) as simulator:
        yield simulator


@pytest.fixture
def heketi_url(request: pytest.FixtureRequest) -> str:
    """The URL of `heketi` if the test asks for it, else of `sim` (a plain fixture: it sets
    up the async one it picks outside the event loop)."""
    name = "heketi" if "heketi" in request.fixturenames else "sim"
    url: str = request.getfixturevalue(name).url
    return url


@pytest.fixture
async def ctl(tmp_path: Path, heketi_url: str) -> AsyncIterator[Controller]:
    controller = await start_controller(tmp_path, heketi_url)
    try:
        await wait_ready(controller.proc, controller.socket)
        yield controller
    finally:
        controller.channel.close()
        await controller.proc.stop()
