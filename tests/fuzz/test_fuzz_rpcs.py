"""Generated hostile requests against a real local cluster must break nothing.

Each run sends requests drawn by hypothesis from the CSI descriptors (every field of every
Identity, Controller and Node RPC; see messages.py and values.py) to the controller and node
sockets of a `LocalCluster` backed by the local glusterd: first with a fixed seed, then with
a random one that is printed. It fails on any INTERNAL or UNKNOWN answer, a broken
connection, a call slower than 5 s, a crash, a mount or file outside the kubelet root, the
secret marker in an answer, a log line or the metrics, and a connection to a URL that only a
crafted id names (see oracle.py). Every failure names the RPC, the hostile fields and the
seed.

Seeds that once found something are kept in REGRESSION_SEEDS and replayed, each on the RPCs
where it found something. Replay a seed: `HCSI_FUZZ_SEED=<seed> python -m pytest tests/fuzz`
(it replaces the random seed; the same seed draws the same requests, though ids the
simulator hands out differ).
`HCSI_FUZZ_EXAMPLES` (default 3000 per seed) and `HCSI_FUZZ_BUDGET` (seconds per seed,
default 80) change the run's size; `HCSI_FUZZ_KEEP_LOGS=1` keeps the processes' logs.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import time
import zlib
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz import messages
from tests.fuzz.harness import FuzzSession
from tests.fuzz.oracle import Finding
from tests.support.host import require_gluster_root

pytestmark = [pytest.mark.fuzz, pytest.mark.gluster]


@pytest.fixture(autouse=True, scope="module")
def _needs_root_and_gluster() -> None:
    require_gluster_root("the fuzz cluster needs root and GlusterFS (FUSE mounts)")


FIXED_SEED = 20261201
# Random seeds that once found a leak or a crash, replayed every run on the RPCs where they
# found it (the same per-RPC draws as the whole run, without the rest of its cost).
REGRESSION_SEEDS = {
    # secret-in-answer: ValidateVolumeCapabilities echoed a `restuserkey` parameter in its
    # `confirmed` answer (found on a fresh machine; tests/unit/test_answers_carry_no_credentials.py)
    2358522117: ("Controller.ValidateVolumeCapabilities",),
}
RANDOM_SEED = int(os.environ.get("HCSI_FUZZ_SEED") or secrets.randbits(32))
EXAMPLES = int(os.environ.get("HCSI_FUZZ_EXAMPLES") or 3000)
BUDGET_S = float(os.environ.get("HCSI_FUZZ_BUDGET") or 80)


def _plan(seed_value: int) -> list[tuple[messages.Rpc, int]]:
    """Each RPC with its number of requests, in an order the seed shuffles. Node RPCs get
    twice as many (their inputs are paths on this machine); requests without fields (the
    Identity RPCs, NodeGetInfo...) are sent once, as hypothesis finds nothing more to vary."""
    rpcs = messages.rpcs()
    random.Random(seed_value).shuffle(rpcs)
    weight = {rpc: 2 if rpc.service == "Node" else 1 for rpc in rpcs}
    varied = sum(w for rpc, w in weight.items() if rpc.request_type.DESCRIPTOR.fields)
    fixed = len(rpcs) - sum(1 for rpc in rpcs if rpc.request_type.DESCRIPTOR.fields)
    unit = -(-(EXAMPLES - fixed) // varied)
    return [(rpc, unit * weight[rpc]) for rpc in rpcs]


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal even while output is captured (the seed must be seen)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(line)


def _report(findings: list[Finding], seed_value: int, summary: str) -> str:
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(finding.kind, finding.rpc)].append(finding)
    lines = [f"{len(findings)} finding(s) in {len(groups)} group(s), seed {seed_value} "
             f"(replay: HCSI_FUZZ_SEED={seed_value} python -m pytest tests/fuzz -k random); "
             f"{summary}"]
    for (kind, rpc), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        lines.append(f"\n== {kind} in {rpc}: {len(group)} time(s); first:")
        lines.append(group[0].text())
        others = Counter(f.fields for f in group[1:])
        for fields, count in others.most_common(3):
            lines.append(f"    also ({count}x) with: {fields[:200]}")
    return "\n".join(lines)


@pytest.mark.parametrize("which", ["fixed", "random",
                                   *(f"regression-{s}" for s in REGRESSION_SEEDS)])
def test_generated_requests_break_nothing(fuzz_session: FuzzSession, which: str,
                                          request: pytest.FixtureRequest) -> None:
    session = fuzz_session
    seed_value = {"fixed": FIXED_SEED, "random": RANDOM_SEED}.get(which) \
        or int(which.removeprefix("regression-"))
    only = REGRESSION_SEEDS.get(seed_value) if which.startswith("regression-") else None
    plan = [(rpc, n) for rpc, n in _plan(seed_value)
            if only is None or f"{rpc.service}.{rpc.method}" in only]
    assert plan, f"no RPC is named {only}"
    _say(request, f"\nfuzz: {which} seed {seed_value} (replay with "
                  f"HCSI_FUZZ_SEED={seed_value} python -m pytest tests/fuzz -k random)")
    first_finding, sent_before, skipped_before = \
        len(session.findings), session.sent, session.skipped
    codes_before = Counter(session.codes)
    session.quarantined.clear()  # each seed finds its own costly inputs
    coverage: dict[str, set[str]] = defaultdict(set)
    count = {"drawn": 0, "over_budget": 0}
    started = time.monotonic()

    def fuzz(rpc: messages.Rpc, examples: int) -> None:
        @settings(max_examples=examples, phases=[Phase.generate], database=None,
                  deadline=None, suppress_health_check=list(HealthCheck))
        @seed(zlib.crc32(f"{seed_value}:{rpc.label}".encode()))
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            if time.monotonic() - started > BUDGET_S:
                count["over_budget"] += 1
                return
            fuzz_request = data.draw(messages.request(session.world, rpc), label="request")
            count["drawn"] += 1
            coverage[rpc.method] |= fuzz_request.fields_set
            session.send(fuzz_request, seed_value, count["drawn"])

        run()

    for rpc, examples in plan:
        fuzz(rpc, examples)
    session.final_checks(seed_value)
    sent, skipped = session.sent - sent_before, session.skipped - skipped_before
    elapsed = time.monotonic() - started
    slowest = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in
                        sorted(session.seconds.items(), key=lambda kv: -kv[1])[:3])
    codes = ", ".join(f"{code} {n}"
                      for code, n in (session.codes - codes_before).most_common())
    summary = (f"{sent} requests sent in {elapsed:.0f} s, {skipped} skipped after a costly "
               f"finding, {count['over_budget']} not sent (over the {BUDGET_S:g} s budget); "
               f"answers: {codes}; slowest: {slowest}")
    _say(request, f"fuzz: {which} seed {seed_value}: {summary}")
    findings = session.findings[first_finding:]
    assert not findings, _report(findings, seed_value, summary)
    missing = {rpc.method: sorted({f.name for f in rpc.request_type.DESCRIPTOR.fields}
                                  - coverage[rpc.method])
               for rpc, _ in plan}
    assert not any(missing.values()), f"fields never given a value: {missing}"
    assert sent >= (sum(n for _, n in plan) if only else EXAMPLES), summary
