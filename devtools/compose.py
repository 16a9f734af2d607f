"""docker-compose.yml on a machine without a registry: the stack up, the demo, nothing left.

    python -m devtools.compose test      # build (cached), up, demo, down -v, check what is left
    python -m devtools.compose prepare   # dockerd, images, shared directory; prints the environment
    python -m devtools.compose down      # down -v and release the directory (idempotent)

``test`` (``make compose-test``) is one run from nothing back to nothing: the private dockerd
(``devtools/k8s/dockerd.py``, started unless it runs, stopped afterwards if it was started
here), the runtime and dev images (``devtools/k8s/driver_image.py``: debootstrap base,
cached by content), the stack's directory (kubelet root, bricks) made a shared mount, then
``docker-compose -f docker-compose.yml -f docker-compose.local.yml up --detach`` and the demo
container's exit code, the stack looked at while it still runs. Whatever the demo did,
``down -v`` follows and then the checks: no container,
network or volume of the project, no mount or loop device under that directory, no gluster
mount from the stack anywhere, none of the stack's gluster volumes on the host's glusterd,
the host's forwarding sysctls as they were. Exit 0 only when the demo passed and nothing was
left. Docker Compose is Debian's docker-compose 1.29 (docs/compose.md says why).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools import glusterd
from devtools.k8s.cluster import ensure_packages
from devtools.k8s.config import cache_root
from devtools.k8s.debian_base import base_image_ref
from devtools.k8s.dockerd import Docker, dockerd_session
from devtools.k8s.driver_image import build_with
from devtools.localcluster.teardown import TeardownReport, mounts_under
from services.common.commands import CommandResult, run_command
from services.node import mountinfo

REPO = Path(__file__).resolve().parents[1]
FILES = (REPO / "docker-compose.yml", REPO / "docker-compose.local.yml")
PROJECT = "hcsi-compose"
# Short, and only characters the gluster mount helper accepts (mounts go below it).
COMPOSE_DIR = Path("/tmp/hcsi-compose")
LOCK = Path("/run/hcsi-compose.lock")
# The simulator names bricks after glusterd's host name; every mount of the stack's volumes
# has it as its source host.
BRICK_HOST = "glusterd"
# Where the simulator's container sees its brick root (the loop devices' backing files).
CONTAINER_BRICK_ROOT = "/bricks/"
UP_TIMEOUT = 600.0
DOWN_TIMEOUT = 180.0
DOCKER_TIMEOUT = 60.0
# What the host needs (debootstrap: the images' base; iptables: dockerd's embedded DNS rules).
PACKAGES = ("docker.io", "docker-compose", "debootstrap", "iptables")
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables",
           "net/bridge/bridge-nf-call-ip6tables")


def log(msg: str) -> None:
    print(f"[compose] {msg}", flush=True)


def run(argv: Sequence[str], seconds: float) -> CommandResult:
    """`run_command` from synchronous code (this module runs no event loop of its own)."""
    return asyncio.run(run_command(argv, seconds))


def compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise RuntimeError("docker-compose not found: apt-get install docker-compose")
    return found


@dataclass(frozen=True)
class Stack:
    """One compose project on one dockerd."""

    docker: Docker
    project: str = PROJECT
    compose_dir: Path = COMPOSE_DIR
    files: tuple[Path, ...] = FILES

    @property
    def kubelet_dir(self) -> Path:
        return self.compose_dir / "kubelet"

    @property
    def bricks_dir(self) -> Path:
        return self.compose_dir / "bricks"

    def env(self) -> dict[str, str]:
        paths = self.docker.paths
        assert paths is not None, "the compose stack runs on the private dockerd"
        return {
            "DOCKER_HOST": paths.host,
            "HEKETI_CSI_COMPOSE_DIR": str(self.compose_dir),
            "HEKETI_CSI_BASE_IMAGE": base_image_ref(),
            "COMPOSE_PROJECT_NAME": self.project,
            "COMPOSE_FILE": os.pathsep.join(str(f) for f in self.files),
        }

    def compose(self, *args: str, seconds: float = DOCKER_TIMEOUT) -> CommandResult:
        argv = ["env", *(f"{k}={v}" for k, v in self.env().items()), compose_binary(), *args]
        return run(argv, seconds)

    def docker_out(self, *args: str) -> str:
        result = run(self.docker.argv(*args), DOCKER_TIMEOUT)
        return result.output if result.returncode == 0 else ""

    def labelled(self, kind: str) -> list[str]:
        """Names of the project's containers, networks or volumes."""
        label = f"label=com.docker.compose.project={self.project}"
        listing = {"container": ("ps", "-a"), "network": ("network", "ls"),
                   "volume": ("volume", "ls")}[kind]
        fmt = "{{.Names}}" if kind == "container" else "{{.Name}}"
        result = run(self.docker.argv(*listing, "--filter", label, "--format", fmt),
                     DOCKER_TIMEOUT)
        if result.returncode != 0:  # no answer is no proof that nothing is left
            raise RuntimeError(f"docker {' '.join(listing)}: {result.output}")
        return result.output.split()


@dataclass
class Observed:
    """The stack as the demo left it, before `down`."""

    demo_exit: int | None
    compose_exit: int
    log: Path
    stack_volumes: list[str]
    mounts: list[str]
    loop_devices: list[str]
    # The host glusterd's volumes at the same moment (None: it did not answer).
    host_volumes: list[str] | None


@dataclass
class Leftovers:
    """What is still there after `down -v` and the release of the compose directory."""

    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    loop_devices: list[str] = field(default_factory=list)
    host_gluster_volumes: list[str] = field(default_factory=list)
    changed_sysctls: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(vars(self).values())


@dataclass
class Outcome:
    observed: Observed
    leftovers: Leftovers
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.observed.demo_exit == 0 and self.leftovers.clean


def read_sysctls() -> dict[str, str]:
    out = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            out[name] = (Path("/proc/sys") / name).read_text().strip()
    return out


def host_gluster_volumes() -> list[str] | None:
    """The host glusterd's volumes; None when it does not answer."""
    try:
        return asyncio.run(glusterd.list_volumes())
    except (glusterd.GlusterError, OSError, TimeoutError):
        return None


def stack_mounts(stack: Stack) -> list[str]:
    """Mounts below the compose directory (the node's FUSE mounts, the simulator's bricks;
    not the directory's own bind mount) and mounts of the stack's gluster volumes anywhere."""
    points = [m.mount_point for m in mounts_under(stack.compose_dir)
              if m.mount_point != str(stack.compose_dir)]
    points += [f"{m.mount_point} ({m.source})" for m in mountinfo.read()
               if m.fstype.endswith("glusterfs") and m.source.startswith(f"{BRICK_HOST}:")]
    return points


def stack_loop_devices(stack: Stack) -> list[str]:
    """Loop devices backed by a file of the stack's brick root (as the simulator's container
    or the host names it)."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            path = backing.read_text().strip()
            if path.startswith((CONTAINER_BRICK_ROOT, f"{stack.bricks_dir}/")):
                found.append(f"/dev/{backing.parts[3]} ({path})")
    return sorted(found)


def stack_volumes(stack: Stack) -> list[str]:
    """Gluster volumes in the stack's glusterd state (read from its docker volume)."""
    volume = f"{stack.project}_glusterd-state"
    mountpoint = stack.docker_out("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
    vols = Path(mountpoint.strip() or "/nonexistent") / "vols"
    return sorted(p.name for p in vols.iterdir()) if vols.is_dir() else []


def prepare_dir(stack: Stack) -> None:
    """The node and the simulator mount below it with rshared propagation: it must be a
    shared mount (the host's / may be private)."""
    for directory in (stack.kubelet_dir, stack.bricks_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if mountinfo.mount_at(mountinfo.read(), str(stack.compose_dir)) is None:
        for argv in (["mount", "--bind", str(stack.compose_dir), str(stack.compose_dir)],
                     ["mount", "--make-rshared", str(stack.compose_dir)]):
            result = run(argv, 30)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {result.output}")


def release_dir(stack: Stack, report: TeardownReport) -> None:
    """Unmount everything below the compose directory (stale FUSE mounts of a node that died,
    bricks of a simulator that did, then the shared bind) and remove it."""
    report.unmounted += asyncio.run(glusterd.cleanup_mounts_under(stack.compose_dir))
    if mountinfo.mount_at(mountinfo.read(), str(stack.compose_dir)) is not None:
        result = run(["umount", str(stack.compose_dir)], 30)
        if result.returncode != 0:
            report.problems.append(f"umount {stack.compose_dir}: {result.output}")
    left = [m.mount_point for m in mounts_under(stack.compose_dir)]
    if left:
        report.problems.append(f"still mounted: {', '.join(left)}")
    else:
        shutil.rmtree(stack.compose_dir, ignore_errors=True)


def down(stack: Stack) -> TeardownReport:
    """`down -v --remove-orphans`, then the compose directory released; safe to repeat."""
    report = TeardownReport()
    result = stack.compose("down", "-v", "--remove-orphans", "--timeout", "20",
                           seconds=DOWN_TIMEOUT)
    if result.returncode != 0:
        report.problems.append(f"docker-compose down exited {result.returncode}: "
                               f"{result.output[-1500:]}")
    release_dir(stack, report)
    return report


def up_demo(stack: Stack, log_path: Path) -> Observed:
    """`up -d`, wait for the demo container to exit, and look at the stack while it still
    runs (a demo that leaked a volume shows here; the simulator would delete it on `down`).
    `up --exit-code-from demo` would stop the stack before anything could be looked at."""
    started = stack.compose("up", "--detach", "--no-build", seconds=UP_TIMEOUT)
    ids = [w for w in stack.compose("ps", "-q", "demo").output.split() if _CONTAINER_ID.match(w)]
    code: int | None = None
    if started.returncode == 0 and ids:
        waited = run(stack.docker.argv("wait", ids[-1]), UP_TIMEOUT)
        last = waited.output.split()[-1:] if waited.returncode == 0 else []
        code = int(last[0]) if last and last[0].isdigit() else None
    logs = stack.compose("--ansi", "never", "logs", "--no-color", seconds=DOCKER_TIMEOUT)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"{started.output}\n{logs.output}\n")
    return Observed(
        demo_exit=code,
        compose_exit=started.returncode,
        log=log_path,
        stack_volumes=stack_volumes(stack),
        mounts=stack_mounts(stack),
        loop_devices=stack_loop_devices(stack),
        host_volumes=host_gluster_volumes(),
    )


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One compose run at a time on this machine (the project name and directory are fixed)."""
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_test(extra_files: Sequence[Path] = (), keep_dockerd: bool = False) -> Outcome:
    """Build (cached), up with the demo, down -v, and what was left; cleanup always runs."""
    seconds: dict[str, float] = {}
    ensure_packages(PACKAGES)
    host_before = host_gluster_volumes()
    sysctls_before = read_sysctls()
    with exclusive(), dockerd_session(keep=keep_dockerd) as docker:
        stack = Stack(docker, files=(*FILES, *extra_files))
        t0 = time.monotonic()
        build_with(docker)
        seconds["build"] = time.monotonic() - t0
        down(stack)  # what an interrupted earlier run left
        t0 = time.monotonic()
        observed = Observed(None, -1, Path(), [], [], [], None)
        try:
            prepare_dir(stack)
            observed = up_demo(stack, cache_root().parent / "compose" / f"{stack.project}.log")
            seconds["up+demo"] = time.monotonic() - t0
        finally:
            t1 = time.monotonic()
            report = down(stack)
            seconds["down"] = time.monotonic() - t1
        left = Leftovers(
            containers=stack.labelled("container"),
            networks=stack.labelled("network"),
            volumes=stack.labelled("volume"),
            mounts=stack_mounts(stack) + [m.mount_point for m in mounts_under(stack.compose_dir)],
            loop_devices=stack_loop_devices(stack),
            problems=report.problems,
        )
    host_after = host_gluster_volumes()
    if host_after is not None:
        left.host_gluster_volumes = sorted(set(host_after) & set(observed.stack_volumes))
    if host_before is not None and host_after is None:
        left.problems.append("the host's glusterd answered before the run, not after it")
    sysctls_after = read_sysctls()
    left.changed_sysctls = [f"{k}: {v} -> {sysctls_after.get(k)}"
                            for k, v in sysctls_before.items() if sysctls_after.get(k) != v]
    return Outcome(observed, left, seconds)


def demo_output(observed: Observed) -> str:
    """What the demo container printed, without docker-compose's `demo_1  | ` prefixes."""
    lines = []
    for line in observed.log.read_text().splitlines() if observed.log.is_file() else []:
        if line.startswith("demo_1"):
            text = line.partition("|")[2].rstrip()
            lines.append(text[1:] if text.startswith(" ") else text)
    return "\n".join(lines) + "\n" if lines else ""


def print_outcome(outcome: Outcome) -> None:
    observed, left = outcome.observed, outcome.leftovers
    print(demo_output(observed), end="")
    log(f"demo exit {observed.demo_exit} (docker-compose exit {observed.compose_exit}); "
        f"full log: {observed.log}")
    log(f"before down: gluster volumes in the stack {observed.stack_volumes or 'none'}; "
        f"mounts {observed.mounts or 'none'}; loop devices {observed.loop_devices or 'none'}")
    for name, value in vars(left).items():
        if value:
            log(f"LEFT BEHIND {name}: {value}")
    log("after down -v: nothing left" if left.clean else "after down -v: NOT clean")
    log(", ".join(f"{k} {v:.1f}s" for k, v in outcome.seconds.items()))


@contextlib.contextmanager
def logs_to_stderr() -> Iterator[None]:
    """Our output and that of the commands we run (docker build) to stderr for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.compose",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("test", "prepare", "down"))
    parser.add_argument("-f", "--file", type=Path, action="append", default=[],
                        help="test: one more compose override file (repeatable)")
    parser.add_argument("--keep-dockerd", action="store_true",
                        help="test: leave the private dockerd running if it was started here")
    args = parser.parse_args(argv)
    if args.command == "test":
        outcome = run_test(args.file, args.keep_dockerd)
        print_outcome(outcome)
        return 0 if outcome.passed else 1
    if args.command == "prepare":
        with logs_to_stderr():
            ensure_packages(PACKAGES)
            with exclusive(), dockerd_session(keep=True) as docker:
                stack = Stack(docker)
                build_with(docker)
                prepare_dir(stack)
        # Only the environment on stdout: eval "$(python -m devtools.compose prepare)".
        for key, value in stack.env().items():
            print(f"export {key}={value}")
        return 0
    with exclusive(), dockerd_session() as docker:
        report = down(Stack(docker))
    print(report.text())
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
