"""Test helpers: one target Heketi for a test, either the simulator or a real Heketi.

Set `HEKETI_TEST_URL` and `HEKETI_TEST_ADMIN_KEY` (and optionally `HEKETI_TEST_USER_KEY`)
to run the Heketi client tests against a real Heketi; otherwise each test gets a fresh
in-process simulator. Tests that need fault injection ask for the simulator through
`HeketiTarget.require_sim()`, which skips them (saying why) against a real Heketi.

Against a real Heketi, tests name their volumes `hcsitest_<random>` and delete, at the end,
exactly the volumes they created (by id).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.heketi_sim.server import HeketiSimulator
from services.controller.heketi import HeketiClient, HeketiNotFound

ENV_URL = "HEKETI_TEST_URL"
ENV_ADMIN_KEY = "HEKETI_TEST_ADMIN_KEY"
ENV_USER_KEY = "HEKETI_TEST_USER_KEY"
TEST_ADMIN_KEY = "test-admin-key"
TEST_USER_KEY = "test-user-key"
NAME_PREFIX = "hcsitest_"


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
            pytest.skip(f"{why} needs the Heketi simulator; {ENV_URL} points at a real Heketi")
        return self.sim

    def require_user_key(self) -> str:
        if not self.user_key:
            pytest.skip(f"{ENV_USER_KEY} is not set for the real Heketi")
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
async def heketi_target(**sim_options: Any) -> AsyncIterator[HeketiTarget]:
    """The real Heketi named by the environment, or a fresh simulator with `sim_options`."""
    url = os.environ.get(ENV_URL)
    if url:
        target = HeketiTarget(url.rstrip("/"), os.environ.get(ENV_ADMIN_KEY),
                              os.environ.get(ENV_USER_KEY), None)
        try:
            yield target
        finally:
            await target.cleanup()
        return
    options = {"admin_key": TEST_ADMIN_KEY, "user_key": TEST_USER_KEY, **sim_options}
    async with HeketiSimulator(**options) as sim:
        target = HeketiTarget(sim.url, sim.config.admin_key, sim.config.user_key, sim)
        try:
            yield target
        finally:
            sim.reset_faults()
            if sim.offline:
                await sim.go_online()
            await target.cleanup()
