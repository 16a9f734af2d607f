"""The driver's images, built from the repository's own Dockerfile, loaded into the cluster.

    python -m devtools.k8s.driver_image build [--tag local] [--force] [--keep-dockerd]
    python -m devtools.k8s.driver_image load  [--tag local]   # build if needed, then import

``build`` starts the private dockerd (``dockerd.py``) if it is not running, makes sure the
Debian base exists (``debian_base.py``: debootstrap once, cached), and builds the Dockerfile's
``runtime`` and ``dev`` targets FROM that base (``--build-arg BASE_IMAGE``; ``--network=host``
because pip and apt inside the build need the package registries; the CA bundle this host
trusts goes in as the build secret ``ca-certificates`` for pip). The images are tagged
``ghcr.io/heketi-csi/heketi-csi:<tag>`` and ``ghcr.io/heketi-csi/heketi-csi-dev:<tag>`` (the
tag ``local`` is what ``k8s/local`` deploys) and also ``:ctx-<hash>``, the hash of the base
image's recipe and of the build context (Dockerfile, .dockerignore, pyproject.toml, README.md,
services/, devtools/): a build whose inputs have not changed since the last one is skipped.
``load`` saves both images with ``docker save`` and imports them into the cluster's
containerd (``images.import_archive``), unless containerd already has this exact build.

The dockerd is stopped at the end if this command started it (``--keep-dockerd`` keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import ssl
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devtools.k8s import images
from devtools.k8s.config import CONTAINERD_SOCKET, cache_root
from devtools.k8s.debian_base import base_image_ref, ensure_base_image
from devtools.k8s.dockerd import Docker, dockerd_session

REPO = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/heketi-csi/heketi-csi"
DEV_IMAGE = "ghcr.io/heketi-csi/heketi-csi-dev"
LOCAL_TAG = "local"
TARGETS = {"runtime": IMAGE, "dev": DEV_IMAGE}
# What the Dockerfile's build context holds; keep in step with .dockerignore.
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "services", "devtools")
IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".pyd")
IGNORED_PREFIXES = ("devtools/k8s/",)


def log(msg: str) -> None:
    print(f"[driver-image] {msg}", flush=True)


def _context_files(repo: Path) -> Iterator[Path]:
    for name in CONTEXT:
        top = repo / name
        if top.is_file():
            yield top
            continue
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(repo).as_posix()
            if (
                not path.is_file()
                or IGNORED_DIRS.intersection(path.parts)
                or rel.endswith(IGNORED_SUFFIXES)
                or rel.startswith(IGNORED_PREFIXES)
            ):
                continue
            yield path


def context_hash(base: str, repo: Path = REPO) -> str:
    """A hash of the base image's reference (it names the base's recipe) and of every file
    the build context holds (names, modes and contents)."""
    digest = hashlib.sha256(base.encode() + b"\0")
    for path in _context_files(repo):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
        digest.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def host_ca_bundle() -> Path | None:
    """The CA bundle this host's own pip/requests/openssl trust (it may include the CA of a
    TLS-intercepting proxy between us and PyPI); None when there is none."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get(v) for v in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")]
    candidates += [paths.openssl_cafile, str(Path(paths.openssl_capath) / "ca-certificates.crt")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def package_version(repo: Path = REPO) -> str:
    with (repo / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


@dataclass
class BuildResult:
    tag: str
    context: str
    built: bool
    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def refs(self) -> list[str]:
        return [f"{image}:{self.tag}" for image in TARGETS.values()]

    @property
    def context_refs(self) -> list[str]:
        return [f"{image}:ctx-{self.context}" for image in TARGETS.values()]


def build_with(
    docker: Docker, tag: str = LOCAL_TAG, force: bool = False, refresh_base: bool = False
) -> BuildResult:
    """Build (or find) the runtime and dev images of the current context in ``docker``."""
    result = BuildResult(tag=tag, context=context_hash(base_image_ref()), built=False)
    cached = all(docker.has_image(ref) for ref in result.context_refs)
    if cached and not force and not refresh_base:
        log(f"context {result.context} unchanged: images cached")
        for ctx_ref, ref in zip(result.context_refs, result.refs, strict=True):
            docker.run("tag", ctx_ref, ref, capture=True)
    else:
        t0 = time.monotonic()
        base = ensure_base_image(docker, refresh=refresh_base)
        result.seconds["base"] = time.monotonic() - t0
        ca = host_ca_bundle()
        secret = ["--secret", f"id=ca-certificates,src={ca}"] if ca else []
        for target, image in TARGETS.items():
            t0 = time.monotonic()
            log(f"docker build --target {target} (context {result.context}) ...")
            docker.run(
                "build",
                "--network=host",
                "--progress=plain",
                *secret,
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--build-arg",
                f"VERSION={package_version()}",
                "--label",
                f"io.heketi-csi.context={result.context}",
                "--target",
                target,
                "-t",
                f"{image}:{tag}",
                "-t",
                f"{image}:ctx-{result.context}",
                "-f",
                str(REPO / "Dockerfile"),
                str(REPO),
            )
            result.seconds[target] = time.monotonic() - t0
            log(f"{image}:{tag} built in {result.seconds[target]:.0f}s")
        result.built = True
        prune_stale(docker, result, base)
    for ref in result.refs:
        result.sizes[ref] = docker.image_size(ref)
    return result


def prune_stale(docker: Docker, result: BuildResult, base: str) -> None:
    """Drop the images of earlier contexts and bases, so the data root does not grow (tags
    other than ``ctx-*``, such as ``local``, stay with whatever they name)."""
    keep = {*result.context_refs, base}
    base_repo = base.rpartition(":")[0]

    def stale(ref: str) -> bool:
        repo, _, tag = ref.rpartition(":")
        if ref in keep:
            return False
        return tag.startswith("ctx-") if repo in TARGETS.values() else repo == base_repo

    listed = docker.run("images", "--format", "{{.Repository}}:{{.Tag}}", capture=True)
    old = [ref for ref in listed.split() if stale(ref)]
    if old:
        docker.run("rmi", *old, capture=True)
    docker.run("image", "prune", "--force", capture=True)


def load_with(
    docker: Docker, result: BuildResult, address: Path = CONTAINERD_SOCKET
) -> float | None:
    """Import both images into the cluster's containerd; None when it already has them."""
    have = images.image_names(address)
    wanted = [images.normalize(r) for r in (*result.refs, *result.context_refs)]
    if all(name in have for name in wanted):
        log(f"containerd already has context {result.context}")
        return None
    t0 = time.monotonic()
    archive = cache_root() / f"driver-images-{result.context}.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        docker.run("save", "-o", str(archive), *result.refs, *result.context_refs, capture=True)
        images.import_archive(archive, address)
    finally:
        archive.unlink(missing_ok=True)
    took = time.monotonic() - t0
    log(f"imported {', '.join(result.refs)} into containerd in {took:.0f}s")
    return took


def build(
    tag: str = LOCAL_TAG,
    force: bool = False,
    keep_dockerd: bool = False,
    refresh_base: bool = False,
) -> BuildResult:
    with dockerd_session(keep=keep_dockerd) as docker:
        return build_with(docker, tag, force, refresh_base)


def load(
    tag: str = LOCAL_TAG,
    force: bool = False,
    keep_dockerd: bool = False,
    address: Path = CONTAINERD_SOCKET,
    refresh_base: bool = False,
) -> BuildResult:
    """Build if the context changed, then import into the cluster's containerd."""
    with dockerd_session(keep=keep_dockerd) as docker:
        result = build_with(docker, tag, force, refresh_base)
        took = load_with(docker, result, address)
        if took is not None:
            result.seconds["load"] = took
        return result


def report(result: BuildResult) -> None:
    for phase, seconds in result.seconds.items():
        log(f"phase {phase}: {seconds:.0f}s")
    for ref, size in result.sizes.items():
        log(f"{ref}: {size / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.k8s.driver_image", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("build", "load"))
    parser.add_argument("--tag", default=LOCAL_TAG, help="image tag (default: %(default)s)")
    parser.add_argument(
        "--force", action="store_true", help="build even when the context is unchanged"
    )
    parser.add_argument(
        "--refresh-base",
        action="store_true",
        help="debootstrap the Debian base again (e.g. for security updates)",
    )
    parser.add_argument(
        "--keep-dockerd", action="store_true", help="leave the private dockerd running afterwards"
    )
    parser.add_argument(
        "--containerd",
        type=Path,
        default=CONTAINERD_SOCKET,
        help="containerd socket for load (default: the local cluster's)",
    )
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    if args.command == "build":
        result = build(args.tag, args.force, args.keep_dockerd, args.refresh_base)
    else:
        result = load(args.tag, args.force, args.keep_dockerd, args.containerd, args.refresh_base)
    report(result)
    log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
