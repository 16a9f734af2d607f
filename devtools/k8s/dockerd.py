"""A private Docker engine (Debian's ``docker.io``) to build the driver's image on this machine.

Nothing here touches a Docker the host may already run: the daemon has its own socket, data
root and exec root, no bridge, no iptables rules, no ip_forward change, and its own (managed)
containerd. It is started on demand and stopped by its pid.

    python -m devtools.k8s.dockerd start | stop | status

    with dockerd_session() as docker:     # starts it unless it runs; stops it only if it did
        docker.run("build", "-t", "name:tag", ".")

How it is started (``start()``)::

    dockerd --host unix://<run>/docker.sock --data-root <cache>/docker/data
            --exec-root <run>/exec --pidfile <run>/dockerd.pid
            --bridge=none --iptables=false --ip-forward=false --ip-masq=false
            --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs
            --oom-score-adjust=0

How it is stopped (``stop()``): SIGTERM to the pid in the pidfile, SIGKILL after 30 s; its
managed containerd exits with it. The data root (images, build cache) is kept in the cache
directory, so the next start finds the base image and the build cache again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.k8s.config import cache_root

DOCKER_RUN_DIR = Path("/run/heketi-csi-docker")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def log(msg: str) -> None:
    print(f"[dockerd] {msg}", flush=True)


@dataclass(frozen=True)
class DockerPaths:
    run: Path
    data_root: Path

    @property
    def socket(self) -> Path:
        return self.run / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run / "dockerd.pid"

    @property
    def exec_root(self) -> Path:
        return self.run / "exec"

    @property
    def log_file(self) -> Path:
        return self.data_root.parent / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


def default_paths() -> DockerPaths:
    # Outside the cluster's RUN_DIR/STATE_DIR/cache on purpose: `python -m devtools.k8s down`
    # stops every process whose command line names those, and an image build needs no cluster.
    return DockerPaths(run=DOCKER_RUN_DIR, data_root=cache_root().parent / "docker" / "data")


def dockerd_binary() -> Path:
    found = shutil.which("dockerd")
    if found is None:
        raise RuntimeError("dockerd not found: apt-get install docker.io")
    return Path(found)


def docker_client() -> Path:
    """The docker CLI of dockerd's own package (same release), whatever else is on PATH: a
    newer CLI wants the buildx plugin for BuildKit, which Debian's docker.io does not ship."""
    dockerd = dockerd_binary().resolve()
    owner = subprocess.run(
        ["dpkg-query", "-S", str(dockerd)], capture_output=True, text=True, check=False
    )
    if owner.returncode == 0:
        package = owner.stdout.split(":", 1)[0]
        files = subprocess.run(
            ["dpkg-query", "-L", package], capture_output=True, text=True, check=False
        ).stdout.split()
        for f in files:
            if f.endswith("/bin/docker") and Path(f).is_file():
                return Path(f)
    sibling = dockerd.with_name("docker")
    if sibling.is_file():
        return sibling
    found = shutil.which("docker")
    if found is None:
        raise RuntimeError("the docker CLI is missing: apt-get install docker.io")
    return Path(found)


@dataclass(frozen=True)
class Docker:
    """The docker CLI bound to one daemon: the private one of ``paths``, or with ``paths``
    None the user's own (the ``docker`` on PATH, with their DOCKER_HOST or context)."""

    paths: DockerPaths | None
    cli: Path | None = None

    def argv(self, *args: str) -> list[str]:
        if self.paths is None:
            return [str(self.cli or "docker"), *args]
        return [str(docker_client()), "--host", self.paths.host, *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, capture: bool = False) -> str:
        """Run ``docker <args>``; output streams to ours unless ``capture``; raises on error."""
        proc = subprocess.run(
            self.argv(*args),
            env=self.env(),
            check=False,
            text=True,
            capture_output=capture,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or "")[-3000:] if capture else ""
            raise RuntimeError(
                f"docker {' '.join(args[:3])}... failed (exit {proc.returncode}) {tail}".rstrip()
            )
        return proc.stdout or ""

    def answers(self) -> bool:
        proc = subprocess.run(
            self.argv("version", "--format", "{{.Server.Version}}"),
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def has_image(self, ref: str) -> bool:
        proc = subprocess.run(
            self.argv("image", "inspect", "--format", "{{.Id}}", ref),
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref, capture=True))


def user_docker() -> Docker:
    """The user's Docker, checked: a clear error when the CLI is missing or no daemon
    answers it."""
    found = shutil.which("docker")
    if found is None:
        raise RuntimeError("docker is not installed (or not on PATH): building the image needs "
                           "Docker with BuildKit, e.g. Debian's docker.io or Docker Engine")
    docker = Docker(paths=None, cli=Path(found))
    try:
        if not docker.answers():
            raise RuntimeError("docker is installed but no Docker daemon answers it: start "
                               "the daemon, or set DOCKER_HOST / `docker context use` to one")
    except subprocess.TimeoutExpired:
        raise RuntimeError("the Docker daemon did not answer within 20 s") from None
    return docker


def _read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def start(paths: DockerPaths | None = None) -> tuple[Docker, bool]:
    """Start the private dockerd unless it already answers; returns (client, started_now)."""
    paths = paths or default_paths()
    docker = Docker(paths)
    if _read_pid(paths.pidfile) is not None and docker.answers():
        return docker, False
    for d in (paths.run, paths.exec_root, paths.data_root):
        d.mkdir(parents=True, exist_ok=True)
    argv = [
        str(dockerd_binary()),
        "--host",
        paths.host,
        "--data-root",
        str(paths.data_root),
        "--exec-root",
        str(paths.exec_root),
        "--pidfile",
        str(paths.pidfile),
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--storage-driver=overlay2",
        "--exec-opt",
        "native.cgroupdriver=cgroupfs",
        # The default (-500) needs CAP_SYS_RESOURCE, which this machine's processes lack.
        "--oom-score-adjust=0",
    ]
    t0 = time.monotonic()
    with paths.log_file.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    while not docker.answers():
        if proc.poll() is not None:
            raise RuntimeError(
                f"dockerd exited with {proc.returncode}; see {paths.log_file}:\n"
                + _tail(paths.log_file)
            )
        if time.monotonic() - t0 > START_TIMEOUT:
            _stop_pid(proc.pid)
            raise RuntimeError(
                f"dockerd did not answer within {START_TIMEOUT:.0f} s; see "
                f"{paths.log_file}:\n" + _tail(paths.log_file)
            )
        time.sleep(0.2)
    log(f"started (pid {proc.pid}) in {time.monotonic() - t0:.1f}s on {paths.socket}")
    return docker, True


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def _stop_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    log(f"pid {pid} still running after {STOP_TIMEOUT:.0f} s: SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(paths: DockerPaths | None = None) -> bool:
    """Stop the private dockerd (by the pid in its pidfile); False when it was not running."""
    paths = paths or default_paths()
    pid = _read_pid(paths.pidfile)
    if pid is None:
        return False
    _stop_pid(pid)
    paths.pidfile.unlink(missing_ok=True)
    log(f"stopped (pid {pid})")
    return True


@contextlib.contextmanager
def dockerd_session(paths: DockerPaths | None = None, keep: bool = False) -> Iterator[Docker]:
    """A running private dockerd for the block; stopped afterwards if this call started it
    (and ``keep`` is False)."""
    docker, started = start(paths)
    try:
        yield docker
    finally:
        if started and not keep:
            stop(docker.paths)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "start":
        docker, _ = start()
        print(docker.argv()[2])
    elif cmd == "stop":
        stop()
    elif cmd == "status":
        paths = default_paths()
        pid = _read_pid(paths.pidfile)
        print(f"running, pid {pid}, {paths.host}" if pid else "not running")
    else:
        print("usage: python -m devtools.k8s.dockerd start|stop|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
