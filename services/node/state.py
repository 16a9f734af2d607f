"""What the node must remember about its mounts across restarts of its own container.

The gluster clients outlive the node container (`clients.py`), but the node's memory does
not: the restarted node adopts the clients and mounts it finds (`adopt.py`) and repairs those
whose client died (`repair.py`), which needs the source and options of each staging mount
and the targets bound from it. So each staging path gets a small JSON file under
`<kubelet-root>/plugins/<driver-name>/state/`, named by its key (a hash of the path, which
also names the cgroup its client runs in):

    {"version": 1, "volume_id": "...", "staging_path": "...", "source": "host:vol",
     "options": ["log-file=...", ...], "log_file": "...", "targets": {"/path": false},
     "stale": {"/path": [1718000000.0, "why"]}}

`targets` maps each publish target to whether it is read-only; `stale` names the targets
whose pods still see a dead mount after a repair (their containers do not receive mounts
from the host), with the time of the repair and what the pod's user should do. A record is
written before its mount is made and deleted after its mount and client are gone, so a crash
at any point leaves a record for everything that may be mounted. Files are written atomically
(temporary file, rename). The store keeps a copy of all records in memory, loaded from disk at
start-up; only this process writes the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from services.common.logging import get_logger

_log = get_logger("node.state")

VERSION = 1


@dataclass(frozen=True)
class StageRecord:
    volume_id: str
    staging_path: str
    source: str
    options: tuple[str, ...]
    log_file: str
    targets: dict[str, bool] = field(default_factory=dict)
    stale: dict[str, tuple[float, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        data: dict[str, Any] = {"version": VERSION, **asdict(self)}
        data["options"] = list(self.options)
        data["stale"] = {k: list(v) for k, v in self.stale.items()}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StageRecord:
        data = json.loads(text)
        if data.get("version") != VERSION:
            raise ValueError(f"unknown state version {data.get('version')!r}")
        return cls(
            volume_id=str(data["volume_id"]),
            staging_path=str(data["staging_path"]),
            source=str(data["source"]),
            options=tuple(str(o) for o in data["options"]),
            log_file=str(data["log_file"]),
            targets={str(k): bool(v) for k, v in data.get("targets", {}).items()},
            stale={str(k): (float(v[0]), str(v[1])) for k, v in data.get("stale", {}).items()},
        )


def state_dir(kubelet_root: str, driver_name: str) -> Path:
    return Path(kubelet_root) / "plugins" / driver_name / "state"


def stage_key(staging_path: str) -> str:
    """A name for everything of one staging path: its state file, its client's cgroup."""
    return "stage-" + hashlib.sha256(staging_path.encode()).hexdigest()[:40]


def _file_name(staging_path: str) -> str:
    return stage_key(staging_path) + ".json"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # No fsync: the records must survive a restart of the node container, which keeps the
    # page cache; after a machine crash every mount is gone anyway and kubelet stages anew.
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _load_all(directory: Path) -> list[StageRecord]:
    records: list[StageRecord] = []
    if not directory.is_dir():
        return records
    for path in sorted(directory.glob("stage-*.json")):
        try:
            records.append(StageRecord.from_json(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("ignoring unreadable state file", path=str(path), error=str(exc))
    return records


class StateStore:
    """Stage records by staging path, persisted under the state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._records: dict[str, StageRecord] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        records = await asyncio.to_thread(_load_all, self.directory)
        self._records = {r.staging_path: r for r in records}

    def get(self, staging_path: str) -> StageRecord | None:
        return self._records.get(staging_path)

    def all(self) -> list[StageRecord]:
        return list(self._records.values())

    def owner_of_target(self, target: str) -> StageRecord | None:
        for record in self._records.values():
            if target in record.targets:
                return record
        return None

    async def put(self, record: StageRecord) -> None:
        async with self._lock:
            await self._write(record)

    async def delete(self, staging_path: str) -> None:
        async with self._lock:
            self._records.pop(staging_path, None)
            path = self.directory / _file_name(staging_path)
            await asyncio.to_thread(_unlink, path)

    async def add_target(self, staging_path: str, target: str, readonly: bool) -> None:
        async with self._lock:
            record = self._records.get(staging_path)
            if record is None or record.targets.get(target) is readonly:
                return
            await self._write(replace(record, targets={**record.targets, target: readonly}))

    async def remove_target(self, target: str) -> None:
        async with self._lock:
            for record in list(self._records.values()):
                if target in record.targets or target in record.stale:
                    targets = {k: v for k, v in record.targets.items() if k != target}
                    stale = {k: v for k, v in record.stale.items() if k != target}
                    await self._write(replace(record, targets=targets, stale=stale))

    async def mark_stale(self, staging_path: str, target: str, since: float, why: str) -> bool:
        """Note that the pod of `target` still sees a dead mount; False when `target` is no
        (longer a) target of `staging_path`."""
        async with self._lock:
            record = self._records.get(staging_path)
            if record is None or target not in record.targets:
                return False
            if record.stale.get(target) != (since, why):
                await self._write(replace(record, stale={**record.stale, target: (since, why)}))
            return True

    async def clear_stale(self, staging_path: str, target: str) -> None:
        async with self._lock:
            record = self._records.get(staging_path)
            if record is not None and target in record.stale:
                stale = {k: v for k, v in record.stale.items() if k != target}
                await self._write(replace(record, stale=stale))

    async def _write(self, record: StageRecord) -> None:
        path = self.directory / _file_name(record.staging_path)
        await asyncio.to_thread(_write_atomically, path, record.to_json())
        self._records[record.staging_path] = record


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
