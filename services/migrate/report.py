"""What migrate tells the administrator: one line per step and claim as it happens, the
plan as a table (or JSON), a summary, and an exit code a script can act on."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from enum import Enum
from typing import TextIO

from services.migrate.plan import Status, Unit

# Exit codes (docs/migrate.md).
OK = 0  # everything asked for is done (plan: every PV can be migrated)
FAILED = 1  # a step or a read failed (API, Heketi); run again once the cause is fixed
USAGE = 2  # bad arguments, e.g. a --pvc that names no in-tree or migrated claim
BLOCKED = 3  # some claims cannot be migrated; the reasons were printed
WAITING = 4  # some claims are still used by pods; scale them down and run again


class Outcome(Enum):
    DONE = "done"
    WAITING = "waiting for pods"
    BLOCKED = "blocked"
    FAILED = "failed"
    SKIPPED = "nothing to do"


_CODE = {Outcome.FAILED: FAILED, Outcome.BLOCKED: BLOCKED, Outcome.WAITING: WAITING}
_SEVERITY = (FAILED, BLOCKED, WAITING)


def exit_code(outcomes: list[Outcome]) -> int:
    codes = {_CODE[o] for o in outcomes if o in _CODE}
    return next((c for c in _SEVERITY if c in codes), OK)


class Progress:
    """Lines like `[3/120] ns/claim: deleting the in-tree PV pvc-...` on the terminal."""

    def __init__(self, units: list[Unit], verb: str, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._index = {u.key: i + 1 for i, u in enumerate(units)}
        self._total = len(units)
        self._verb = verb
        self._started = time.monotonic()
        self.outcomes: dict[str, tuple[Outcome, str]] = {}

    def say(self, unit: Unit, text: str) -> None:
        elapsed = time.monotonic() - self._started
        print(f"{elapsed:7.1f}s [{self._index.get(unit.key, 0)}/{self._total}] {unit.key}: "
              f"{text}", file=self._out, flush=True)

    def done(self, unit: Unit, outcome: Outcome, detail: str = "") -> Outcome:
        self.outcomes[unit.key] = (outcome, detail)
        self.say(unit, outcome.value + (f": {detail}" if detail else ""))
        return outcome

    def summary(self) -> int:
        counts = Counter(o for o, _ in self.outcomes.values())
        seconds = time.monotonic() - self._started
        parts = [f"{counts[o]} {o.value}" for o in Outcome if counts[o]]
        print(f"\n{self._verb}: {len(self.outcomes)} claims in {seconds:.1f} s: "
              + (", ".join(parts) or "nothing selected"), file=self._out)
        for key, (outcome, detail) in sorted(self.outcomes.items()):
            if outcome in (Outcome.FAILED, Outcome.BLOCKED, Outcome.WAITING):
                print(f"  {key}: {outcome.value}: {detail}", file=self._out)
        return exit_code([o for o, _ in self.outcomes.values()])


_ACTION = {
    Status.READY: "would migrate",
    Status.IN_USE: "would migrate after its pods stop",
    Status.IN_PROGRESS: "begun earlier",
    Status.MIGRATED: "already migrated",
}


def print_plan(units: list[Unit], fmt: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if fmt == "json":
        print(json.dumps([u.as_json() for u in units], indent=2), file=out)
    else:
        for unit in units:
            _print_unit(unit, out)
        counts = Counter(u.status for u in units)
        print(f"\n{len(units)} claims: " + (", ".join(
            f"{counts[s]} {s.value}" for s in Status if counts[s]) or "no in-tree glusterfs "
            "PVs found"), file=out)
    statuses = {u.status for u in units}
    if Status.ERROR in statuses:
        return FAILED
    return BLOCKED if Status.BLOCKED in statuses else OK


def _print_unit(unit: Unit, out: TextIO) -> None:
    data = unit.as_json()
    print(f"{unit.key}: {unit.status.value}", file=out)
    if data["pv"]:
        print(f"  in-tree PV   {data['pv']}", file=out)
    if data["heketiVolume"]:
        volume = data["heketiVolume"]
        backend = unit.target.token if unit.target else "?"
        print(f"  Heketi       {volume['name']} ({volume['id']}, backend {backend})", file=out)
    classes = data["storageClass"]
    if classes["from"] or classes["to"]:
        print(f"  class        {classes['from'] or '-'} -> {classes['to'] or '?'}", file=out)
    if unit.pods:
        print("  used by      " + ", ".join(data["pods"]), file=out)
    if unit.status in _ACTION:
        target = data["csiPv"]
        steps = [f"CSI PV {target} ({data['volumeId'] or 'adopted id'})"] \
            if unit.status in (Status.READY, Status.IN_USE) else []
        print(f"  {_ACTION[unit.status]}" + (": " + "; ".join(steps) if steps else ""),
              file=out)
    for reason in unit.reasons:
        print(f"  - {reason}", file=out)
