"""The simulator as a process on a state file, to be killed with SIGKILL and started again on
the same port and file, as tests do to a real Heketi (devtools/heketi_real's kill/restart).

    sim = SimProcess(tmp_path / "sim", admin_key=KEY, op_latency=30)
    await sim.start()          # `python -m devtools.heketi_sim --db <dir>/heketi-sim.json`
    ... sim.url ...
    await sim.kill()           # SIGKILL; the state file stays
    await sim.restart()        # same port, same file
    sim.log()                  # what it wrote on stderr (the stale-operations warning)
    await sim.stop()           # SIGKILL if still running (the directory is the test's)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import BinaryIO

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


class SimProcess:
    def __init__(self, directory: Path, *, admin_key: str, user_key: str = "user-key",
                 op_latency: float = 30.0, max_inflight: int = 8,
                 cleaner_start_s: float = 3600.0, cleaner_refresh_s: float = 3600.0) -> None:
        self.directory = directory
        self.db = directory / "heketi-sim.json"
        self.admin_key, self.user_key = admin_key, user_key
        self.op_latency, self.max_inflight = op_latency, max_inflight
        self.cleaner_start_s, self.cleaner_refresh_s = cleaner_start_s, cleaner_refresh_s
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "heketi-sim.log"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "devtools.heketi_sim", "--port", str(self.port),
                f"--admin-key={self.admin_key}", f"--user-key={self.user_key}",
                "--op-latency", str(self.op_latency), "--max-inflight", str(self.max_inflight),
                "--db", str(self.db), "--cleaner-start", str(self.cleaner_start_s),
                "--cleaner-refresh", str(self.cleaner_refresh_s)]
        self._starts += 1
        log = await asyncio.to_thread(self._open_log)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log)
        finally:
            log.close()
        assert self.proc.stdout is not None
        try:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)).decode()
        except TimeoutError:
            await self.stop()
            raise
        if not line.startswith("heketi-sim listening on http://127.0.0.1:"):
            await self.stop()
            raise RuntimeError(f"the simulator did not start: {line!r}\n{self.log()[-2000:]}")
        self.port = int(line.strip().rsplit(":", 1)[-1])

    def _open_log(self) -> BinaryIO:
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child, then closed)
        log.write(f"--- start {self._starts}\n".encode())
        log.flush()
        return log

    async def kill(self) -> None:
        """SIGKILL (the state file stays)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self) -> None:
        await self.kill()
