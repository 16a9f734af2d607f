"""The driver's images, built from the repository's own Dockerfile: for users (their Docker)
and for the local cluster (a private dockerd, pushed to the cluster's registry).

    python3 -m devtools.k8s.driver_image image [--base-image IMAGE]    # make image
    python3 -m devtools.k8s.driver_image push --registry REGISTRY      # make push
    python -m devtools.k8s.driver_image build [--tag local] [--force] [--keep-dockerd]
    python -m devtools.k8s.driver_image publish [--force]   # build if needed, push to the
                                                            # local cluster's registry

``image`` and ``push`` are what users run (`make image`, `make push REGISTRY=...`): the
``docker`` on their PATH builds the Dockerfile's ``runtime`` target as
``heketi-csi:<version>`` (the version of pyproject.toml) on the Dockerfile's default base,
prints its size, and ``push`` tags it ``<registry>/heketi-csi:<version>`` and pushes it.

``build`` starts the private dockerd (``dockerd.py``) if it is not running, makes sure the
Debian base exists (``debian_base.py``: debootstrap once, cached), and builds the Dockerfile's
``runtime`` and ``dev`` targets FROM that base (``--build-arg BASE_IMAGE``; ``--network=host``
because pip and apt inside the build need the package registries; the CA bundle this host
trusts goes in as the build secret ``ca-certificates`` for pip). The images are tagged
``ghcr.io/heketi-csi/heketi-csi:<tag>`` and ``ghcr.io/heketi-csi/heketi-csi-dev:<tag>`` and
also ``:ctx-<hash>``, the hash of the base image's recipe and of the build context
(Dockerfile, .dockerignore, pyproject.toml, README.md, services/, devtools/): a build whose
inputs have not changed since the last one is skipped. Both paths run the same ``docker
build`` of the same Dockerfile (``docker_build``); only the daemon and the base differ.
``publish`` tags both ``ctx-<hash>`` images ``127.0.0.1:23850/heketi-csi[-dev]:ctx-<hash>``
and pushes them to the local cluster's registry (``registry.py``), unless it already has
them; `deploy` then points k8s/local at those references and kubelet pulls them.

The dockerd is stopped at the end if this command started it (``--keep-dockerd`` keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import ssl
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devtools.k8s import registry
from devtools.k8s.config import REGISTRY
from devtools.k8s.debian_base import base_image_ref, ensure_base_image
from devtools.k8s.dockerd import Docker, dockerd_session, user_docker

REPO = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/heketi-csi/heketi-csi"
DEV_IMAGE = "ghcr.io/heketi-csi/heketi-csi-dev"
LOCAL_TAG = "local"
TARGETS = {"runtime": IMAGE, "dev": DEV_IMAGE}
# Where `publish` pushes each target: the local cluster's registry (k8s/local pulls these).
REGISTRY_IMAGES = {"runtime": f"{REGISTRY}/heketi-csi", "dev": f"{REGISTRY}/heketi-csi-dev"}
# The name `make image` gives the driver image in the user's Docker.
USER_IMAGE = "heketi-csi"
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


def docker_build(docker: Docker, target: str, tags: list[str], base: str | None = None,
                 extra: list[str] | None = None) -> None:
    """`docker build` of the repository's Dockerfile: one target, its tags, the package
    version as VERSION, and BASE_IMAGE unless the Dockerfile's default base is wanted."""
    base_arg = ["--build-arg", f"BASE_IMAGE={base}"] if base else []
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    docker.run("build", "--progress=plain", *(extra or []), *base_arg,
               "--build-arg", f"VERSION={package_version()}", "--target", target,
               *tag_args, "-f", str(REPO / "Dockerfile"), str(REPO))


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
            docker_build(docker, target, [f"{image}:{tag}", f"{image}:ctx-{result.context}"],
                         base=base, extra=["--network=host", *secret, "--label",
                                           f"io.heketi-csi.context={result.context}"])
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


def registry_refs(result: BuildResult) -> dict[str, str]:
    """target -> the reference `publish` pushes it as (content tag, local registry)."""
    return {target: f"{name}:ctx-{result.context}" for target, name in REGISTRY_IMAGES.items()}


def publish_with(docker: Docker, result: BuildResult) -> float | None:
    """Push both images to the local cluster's registry; None when it has them already."""
    if not registry.answers():
        raise RuntimeError(f"the cluster's registry does not answer on {registry.url()}: "
                           "`python -m devtools.k8s up` starts it")
    refs = registry_refs(result)
    wanted = {t: r for t, r in refs.items()
              if not registry.has_manifest(*r.removeprefix(f"{REGISTRY}/").split(":", 1))}
    if not wanted:
        log(f"the registry already has context {result.context}")
        return None
    t0 = time.monotonic()
    for target, ref in wanted.items():
        docker.run("tag", f"{TARGETS[target]}:ctx-{result.context}", ref, capture=True)
        log(f"docker push {ref} ...")
        docker.run("push", ref, capture=True)
    took = time.monotonic() - t0
    log(f"pushed {', '.join(wanted.values())} in {took:.0f}s")
    return took


def build(
    tag: str = LOCAL_TAG,
    force: bool = False,
    keep_dockerd: bool = False,
    refresh_base: bool = False,
) -> BuildResult:
    with dockerd_session(keep=keep_dockerd) as docker:
        return build_with(docker, tag, force, refresh_base)


def publish(force: bool = False, keep_dockerd: bool = False,
            refresh_base: bool = False) -> BuildResult:
    """Build if the context changed, then push to the local cluster's registry."""
    with dockerd_session(keep=keep_dockerd) as docker:
        result = build_with(docker, LOCAL_TAG, force, refresh_base)
        took = publish_with(docker, result)
        if took is not None:
            result.seconds["push"] = took
        return result


def report(result: BuildResult) -> None:
    for phase, seconds in result.seconds.items():
        log(f"phase {phase}: {seconds:.0f}s")
    for ref, size in result.sizes.items():
        log(f"{ref}: {size / 2**20:.0f} MiB")


# A registry as `docker push` takes it: host[:port][/path], no scheme, no tag.
REGISTRY_NAME = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class UsageError(Exception):
    """Something the user gave (or did not give) that this command cannot work with."""


def user_tag() -> str:
    version = package_version()
    if not TAG.fullmatch(version):
        raise UsageError(f"the package version {version!r} (pyproject.toml) is not a valid "
                         "image tag")
    return version


def check_registry(value: str | None) -> str:
    value = (value or "").strip().rstrip("/")
    if not value:
        raise UsageError("REGISTRY is missing: make push REGISTRY=<host[:port][/path]>, e.g. "
                         "REGISTRY=registry.example.com/storage")
    if "://" in value:
        raise UsageError(f"REGISTRY {value!r}: give host[:port][/path] without a scheme")
    if len(value) > 200 or not REGISTRY_NAME.fullmatch(value):
        raise UsageError(f"REGISTRY {value[:200]!r} is not a registry name "
                         "(host[:port][/path], path in lower case)")
    return value


NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def user_image(base: str | None = None, network: str | None = None) -> str:
    """`make image`: the runtime target with the user's Docker, as heketi-csi:<version>
    (`network`: the build's --network, e.g. host on a daemon without a bridge)."""
    if network is not None and not NETWORK.fullmatch(network):
        raise UsageError(f"BUILD_NETWORK {network[:64]!r} is not a network name")
    ref = f"{USER_IMAGE}:{user_tag()}"
    docker = user_docker()
    t0 = time.monotonic()
    log(f"docker build --target runtime -t {ref} ...")
    docker_build(docker, "runtime", [ref], base=base,
                 extra=[f"--network={network}"] if network else [])
    size = docker.image_size(ref)
    log(f"built {ref} in {time.monotonic() - t0:.0f}s: {size / 2**20:.0f} MiB")
    return ref


def user_push(registry_name: str | None) -> str:
    """`make push REGISTRY=...`: tag the image `make image` built and push it."""
    target = f"{check_registry(registry_name)}/{USER_IMAGE}:{user_tag()}"
    docker = user_docker()
    local = f"{USER_IMAGE}:{user_tag()}"
    if not docker.has_image(local):
        raise UsageError(f"{local} is not in your Docker: `make image` first")
    docker.run("tag", local, target, capture=True)
    log(f"docker push {target} ...")
    docker.run("push", target)
    log(f"pushed {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.k8s.driver_image", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("image", "push", "build", "publish"))
    parser.add_argument("--base-image", default=None,
                        help="image: BASE_IMAGE for the Dockerfile (default: its own)")
    parser.add_argument("--network", default=None,
                        help="image: the build's network (docker build --network)")
    parser.add_argument("--registry", default=None,
                        help="push: where to push, host[:port][/path]")
    parser.add_argument("--tag", default=LOCAL_TAG, help="build: image tag (default: %(default)s)")
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
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        if args.command == "image":
            user_image(args.base_image or None, args.network or None)
            return 0
        if args.command == "push":
            user_push(args.registry)
            return 0
    except (UsageError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "build":
        result = build(args.tag, args.force, args.keep_dockerd, args.refresh_base)
    else:
        result = publish(args.force, args.keep_dockerd, args.refresh_base)
    report(result)
    log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
