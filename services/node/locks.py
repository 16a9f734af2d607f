"""Per-object operation locks: a second call on a busy volume or path answers ABORTED.

Kubelet retries an ABORTED call later; answering at once (instead of queueing the call) keeps
a retry storm from piling up behind a slow mount.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from services.common.errors import Aborted


class OperationLocks:
    """Non-blocking locks keyed by strings (volume ids, paths)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def busy(self, key: str) -> bool:
        return key in self._held

    def try_acquire(self, *keys: str) -> bool:
        """Take all `keys`, or none of them if any is held."""
        if any(key in self._held for key in keys):
            return False
        self._held.update(keys)
        return True

    def release(self, *keys: str) -> None:
        for key in keys:
            self._held.discard(key)

    def acquire_or_abort(self, *keys: str) -> None:
        """Take all `keys`; raise Aborted (taking none) when one is already held."""
        if not self.try_acquire(*keys):
            busy = next(key for key in keys if key in self._held)
            raise Aborted(f"an operation on {busy} is already in progress; retry later")

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        """Hold `keys` for the block; raise Aborted when one is already held."""
        self.acquire_or_abort(*keys)
        try:
            yield
        finally:
            self.release(*keys)
