"""Run `writer.py` as a subprocess and read what it logged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from devtools.gluster_pool.processes import python
from devtools.localcluster.processes import terminate

WRITER = Path(__file__).with_name("writer.py")


@dataclass(frozen=True)
class Attempt:
    ok: bool
    n: int
    start: float  # when the attempt began, on the writer's clock (writer.py: time.time())
    seconds: float
    error: str = ""


def parse_attempts(text: str) -> list[Attempt]:
    """The attempts of a writer's log: lines `OK <n> <start> <seconds>` and `ERR <n> <start>
    <seconds> [<error>]`; other lines (a line being written, a banner) are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] not in ("OK", "ERR"):
            continue
        out.append(Attempt(parts[0] == "OK", int(parts[1]), float(parts[2]),
                           float(parts[3]), parts[4] if len(parts) > 4 else ""))
    return out


class Writer:
    """`async with Writer(file, log) as w:` appends a counter line + fsync every `interval`."""

    def __init__(self, target: Path, log: Path, interval: float = 0.1) -> None:
        self.target, self.log, self.interval = target, log, interval
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Writer:
        self.log.unlink(missing_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            python(), str(WRITER), str(self.target), str(self.log), str(self.interval),
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        return self

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the attempt in progress finishes), SIGKILL after `timeout`."""
        if self.proc is not None:
            await terminate(self.proc, timeout)

    async def __aenter__(self) -> Writer:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def attempts(self) -> list[Attempt]:
        try:
            return parse_attempts(self.log.read_text())
        except FileNotFoundError:
            return []

    def acked(self) -> list[int]:
        return [a.n for a in self.attempts() if a.ok]

    def errors(self) -> list[Attempt]:
        return [a for a in self.attempts() if not a.ok]

    def longest(self, since: float = 0.0) -> float:
        """The longest successful attempt that began at or after `since`."""
        return max((a.seconds for a in self.attempts() if a.ok and a.start >= since),
                   default=0.0)

    def oks_after(self, moment: float) -> int:
        return sum(1 for a in self.attempts() if a.ok and a.start >= moment)
