"""Test helpers: one target Heketi for a test, either the simulator or a real Heketi.

The client tests run on both backends (the `heketi_backend` fixture of tests/conftest.py):
`sim_target()` gives each test a fresh in-process simulator, `real_target(endpoint)` the
session's real Heketi (devtools/heketi_real, or the one `HEKETI_TEST_URL`,
`HEKETI_TEST_ADMIN_KEY` and optionally `HEKETI_TEST_USER_KEY` name); `fresh_target()` a
Heketi of its own with other settings (nodes, auth off...) on either. Tests that need fault
injection ask for the simulator through `HeketiTarget.require_sim()`, which skips them
against a real Heketi, saying why.

Against a real Heketi, tests name their volumes `hcsitest_<random>` and delete, at the end,
exactly the volumes they created (by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from services.controller.heketi import HeketiClient, HeketiNotFound

ENV_URL = "HEKETI_TEST_URL"
ENV_ADMIN_KEY = "HEKETI_TEST_ADMIN_KEY"
ENV_USER_KEY = "HEKETI_TEST_USER_KEY"
TEST_ADMIN_KEY = "test-admin-key"
TEST_USER_KEY = "test-user-key"
NAME_PREFIX = "hcsitest_"


class Endpoint(Protocol):
    """Where a real Heketi answers (a RealHeketi, or the one the environment names)."""

    @property
    def url(self) -> str: ...
    @property
    def admin_key(self) -> str | None: ...
    @property
    def user_key(self) -> str | None: ...


@dataclass(frozen=True)
class EnvEndpoint:
    url: str
    admin_key: str | None
    user_key: str | None

    def __repr__(self) -> str:
        return f"EnvEndpoint({self.url})"


def env_endpoint() -> EnvEndpoint | None:
    """The real Heketi named by `HEKETI_TEST_URL` (and its keys), if set."""
    url = os.environ.get(ENV_URL)
    if not url:
        return None
    return EnvEndpoint(url.rstrip("/"), os.environ.get(ENV_ADMIN_KEY),
                       os.environ.get(ENV_USER_KEY))


def unique_name(label: str = "v") -> str:
    """A volume name that is unique and marks the volume as a test's own."""
    return f"{NAME_PREFIX}{label}_{secrets.token_hex(4)}"


@dataclass
class HeketiTarget:
    """Where the client tests point: `sim` is None against a real Heketi."""

    url: str
    admin_key: str | None
    user_key: str | None
    sim: HeketiSimulator | None
    created: list[str] = field(default_factory=list)
    _clients: list[HeketiClient] = field(default_factory=list)

    @property
    def is_sim(self) -> bool:
        return self.sim is not None

    def require_sim(self, why: str = "fault injection") -> HeketiSimulator:
        if self.sim is None:
            pytest.skip(f"simulator only: {why}")
        return self.sim

    def require_user_key(self) -> str:
        if not self.user_key:
            pytest.fail(f"{ENV_USER_KEY} is not set for the real Heketi at {self.url}",
                        pytrace=False)
        return self.user_key

    def client(self, user: str = "admin", key: str | None = None, **options: Any) -> HeketiClient:
        """A client for the target, closed when the test ends."""
        client = HeketiClient(self.url, user, key if key is not None else self.admin_key,
                              name="test", **options)
        self._clients.append(client)
        return client

    def track(self, volume_id: str) -> str:
        """Delete this volume when the test ends (if it still exists)."""
        self.created.append(volume_id)
        return volume_id

    async def cleanup(self) -> None:
        if self.created:
            janitor = HeketiClient(self.url, "admin", self.admin_key, name="janitor")
            try:
                for volume_id in reversed(self.created):
                    with contextlib.suppress(HeketiNotFound):
                        await janitor.delete_volume(volume_id)
            finally:
                await janitor.close()
        for client in self._clients:
            await client.close()


@contextlib.asynccontextmanager
async def real_target(endpoint: Endpoint) -> AsyncIterator[HeketiTarget]:
    """A running real Heketi; the test's own volumes are deleted at the end."""
    target = HeketiTarget(endpoint.url, endpoint.admin_key, endpoint.user_key, None)
    try:
        yield target
    finally:
        await target.cleanup()


@contextlib.asynccontextmanager
async def sim_target(**sim_options: Any) -> AsyncIterator[HeketiTarget]:
    """A fresh simulator with `sim_options` (SimConfig fields), instant unless they say."""
    options = {"admin_key": TEST_ADMIN_KEY, "user_key": TEST_USER_KEY, "op_latency": INSTANT,
               **sim_options}
    async with HeketiSimulator(**options) as sim:
        target = HeketiTarget(sim.url, sim.config.admin_key, sim.config.user_key, sim)
        try:
            yield target
        finally:
            sim.reset_faults()
            if sim.offline:
                await sim.go_online()
            await target.cleanup()


# SimConfig fields a fresh real Heketi can take too (RealHeketiConfig's names)
_REAL_OPTIONS = {"nodes": "nodes", "devices_per_node": "devices_per_node",
                 "device_size_gib": "device_size_gib", "use_auth": "use_auth",
                 "max_inflight": "max_inflight", "tls_cert": "tls_cert", "tls_key": "tls_key"}


@contextlib.asynccontextmanager
async def fresh_target(backend: str, **options: Any) -> AsyncIterator[HeketiTarget]:
    """A Heketi of the test's own on `backend` ("sim" or "real"), with `options`.

    A real one is a new process (about 0.3 s with its topology); an option it cannot take
    skips the test, naming it.
    """
    if backend == "sim":
        async with sim_target(**options) as target:
            yield target
        return
    from devtools.heketi_real import RealHeketi, RealHeketiConfig

    unknown = sorted(set(options) - set(_REAL_OPTIONS))
    if unknown:
        pytest.skip(f"simulator only: {', '.join(unknown)} (no such setting on the real Heketi "
                    "these tests start)")
    cfg = RealHeketiConfig(load_with_cli=False,
                           **{_REAL_OPTIONS[k]: v for k, v in options.items()})
    heketi = RealHeketi(cfg)
    await asyncio.to_thread(heketi.start)
    try:
        async with real_target(heketi) as target:
            yield target
    finally:
        await asyncio.to_thread(heketi.stop)


@contextlib.asynccontextmanager
async def heketi_target(**sim_options: Any) -> AsyncIterator[HeketiTarget]:
    """The real Heketi named by the environment, or a fresh simulator with `sim_options`."""
    endpoint = env_endpoint()
    if endpoint is not None:
        async with real_target(endpoint) as target:
            yield target
        return
    async with sim_target(**sim_options) as target:
        yield target
