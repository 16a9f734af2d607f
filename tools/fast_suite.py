"""The fast suite as two pytest runs side by side (the machine has two cores, and much of
the suite waits on processes, mounts and sockets rather than computing).

    python tools/fast_suite.py [extra pytest arguments for both runs]

Run 1 is the integration tests (the shared local cluster and most mounts); run 2 is the
unit tests, csi-sanity, the fuzz and the migrate tests against a real kube-apiserver (the
longest tests that share nothing with run 1: the clusters of csi-sanity and the fuzz, their
volumes and paths are their own). Measured: 10m46s with the fuzz in run 1 (run 1 10m43s,
run 2 6m48s), where one run took 14m35s. Each line of output carries its run's number; at
the end each run's last line (its pytest summary) and wall time are printed again. The exit
status is 0 only when both pass.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

COMMON = ["-ra", "-m", "not pool_faults", "--durations=15", "-p", "no:cacheprovider"]
RUNS = (
    ("1", ["tests/integration", "--ignore=tests/integration/test_migrate_apiserver.py"]),
    ("2", ["tests/unit", "tests/conformance", "tests/fuzz",
           "tests/integration/test_migrate_apiserver.py"]),
)


@dataclass
class Outcome:
    name: str
    status: int
    seconds: float
    last: str


async def _relay(name: str, stream: asyncio.StreamReader) -> str:
    last = ""
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").rstrip("\n")
        if text.strip():
            last = text
        sys.stdout.write(f"[{name}] {text}\n")
        sys.stdout.flush()
    return last


async def _run(name: str, paths: list[str], extra: list[str]) -> Outcome:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", *COMMON, *extra, *paths,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    last = await _relay(name, proc.stdout)
    status = await proc.wait()
    return Outcome(name, status, time.monotonic() - started, last)


async def main(extra: list[str]) -> int:
    started = time.monotonic()
    outcomes = await asyncio.gather(*(_run(name, paths, extra) for name, paths in RUNS))
    print(f"\nthe fast suite: {time.monotonic() - started:.0f} s in all, two runs side by side")
    for outcome in outcomes:
        verdict = "passed" if outcome.status == 0 else f"FAILED (exit {outcome.status})"
        print(f"  run {outcome.name}: {verdict} in {outcome.seconds:.0f} s: {outcome.last}")
    return 0 if all(o.status == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
