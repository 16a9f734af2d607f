"""docker-compose.yml for real (`make compose-test`): Debian's docker-compose 1.29 on the
private dockerd, images from our Dockerfile on the debootstrap base, the demo service against
the stack, then `down -v` and nothing left (devtools/compose.py does the run and the checks).

Needs root, and the packages `python -m devtools.compose` installs when missing (docker.io,
docker-compose, debootstrap); the first run builds the images (minutes), later runs find them
cached by content.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import compose, glusterd
from devtools.k8s import dockerd
from tests.support.demo_output import demo_problems

HERE = Path(__file__).resolve().parent
FAILING_DEMO = HERE / "failing-demo.yml"
ABANDONED = 3  # tests/compose/abandon.py's exit code


@pytest.fixture(autouse=True)
def host_glusterd() -> None:
    """The host's own glusterd runs, so that the runs show the stack's glusterd beside it."""
    glusterd.ensure_glusterd()


def dockerd_running() -> bool:
    return dockerd._read_pid(dockerd.default_paths().pidfile) is not None


def run(extra_files: tuple[Path, ...] = ()) -> compose.Outcome:
    was_running = dockerd_running()
    outcome = compose.run_test(extra_files)
    compose.print_outcome(outcome)
    assert dockerd_running() == was_running, "the run must stop the dockerd it started"
    return outcome


def assert_nothing_left(outcome: compose.Outcome) -> None:
    left = outcome.leftovers
    assert left.clean, {name: value for name, value in vars(left).items() if value}
    assert not Path(compose.COMPOSE_DIR).exists()


def test_demo_passes_against_the_stack_and_down_leaves_nothing() -> None:
    outcome = run()
    observed = outcome.observed
    printed = compose.demo_output(observed)
    assert observed.demo_exit == 0, printed or observed.log.read_text()
    # every step played and cleaned up as `[ ok ]`; an UNIMPLEMENTED one is a failure
    # pool=False: the compose stack's simulator is on its glusterd container (no pool: the
    # pool's servers live in network namespaces of this host, docker's network cannot reach
    # them; see README, "docker compose")
    problems = demo_problems(printed, pool=False)
    assert not problems, "\n".join(problems) + "\n" + printed
    # The demo undid everything itself: no volume in the stack's (still running) glusterd,
    # no mount, no brick.
    assert observed.stack_volumes == []
    assert observed.mounts == [] and observed.loop_devices == []
    assert_nothing_left(outcome)


def test_down_cleans_up_after_a_demo_that_fails_half_way() -> None:
    outcome = run((FAILING_DEMO,))
    observed = outcome.observed
    assert observed.demo_exit == ABANDONED
    # What the failed demo left for the cleanup: its gluster volume in the stack's glusterd
    # (and not in the host's), its FUSE mount at the staging path and the pod's bind.
    assert len(observed.stack_volumes) == 1
    assert observed.stack_volumes[0].startswith("csi_pvc-abandoned")
    assert observed.host_volumes is not None
    assert not set(observed.host_volumes) & set(observed.stack_volumes)
    assert any(m.endswith("/globalmount") for m in observed.mounts), observed.mounts
    assert any("/pods/pod-abandoned/" in m for m in observed.mounts), observed.mounts
    assert_nothing_left(outcome)
