"""A local cluster in a thread of its own, for synchronous (session-scoped) test fixtures."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from devtools.localcluster.cluster import LocalCluster
from devtools.localcluster.processes import ClusterError
from devtools.localcluster.teardown import TeardownReport

T = TypeVar("T")


class BackgroundCluster:
    """Runs a LocalCluster in its own thread and event loop.

    `with BackgroundCluster(**kwargs) as cluster:` yields the started LocalCluster; its paths,
    URLs and keys are plain values usable from any thread and loop. Coroutines that touch
    its processes (e.g. `cluster.restart("node")`) must run in the cluster's loop:
    `background.call(cluster.restart("node"))` or `await background.acall(...)`.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.cluster: LocalCluster | None = None
        self.report: TeardownReport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="local-cluster", daemon=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        report = self.stop()
        if exc_type is None and report is not None and not report.clean:
            raise ClusterError("local cluster teardown left things behind:\n" + report.text())

    def start(self, timeout: float = 300.0) -> LocalCluster:
        # Should the caller never stop it (an interpreter exiting on an error), tear down
        # at exit anyway: the thread is a daemon and would otherwise just vanish.
        atexit.register(self.stop)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ClusterError(f"the local cluster did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        assert self.cluster is not None
        return self.cluster

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        cluster = LocalCluster(**self.kwargs)
        try:
            await cluster.start()
        except BaseException as exc:
            self._error = exc
            return
        self.cluster = cluster
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self.report = await cluster.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 300.0) -> T:
        """Run `coro` in the cluster's loop and wait for its result (from another thread)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Like call(), awaitable from another event loop."""
        assert self._loop is not None
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wrap_future(future)

    def stop(self, timeout: float = 300.0) -> TeardownReport | None:
        atexit.unregister(self.stop)
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed already
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout)
        return self.report
