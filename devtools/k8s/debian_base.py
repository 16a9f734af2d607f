"""A Debian base image without a registry: ``debootstrap --variant=minbase`` + ``docker import``.

The Dockerfile's default base (``python:3.11-slim-bookworm``) comes from Docker Hub, which this
machine cannot reach. Instead the base is a minimal Debian bookworm made by debootstrap from
the Debian mirror that apt on this host is configured with (read from /etc/apt at run time),
imported into the private dockerd (``devtools/k8s/dockerd.py``) as
``localhost/heketi-csi-base:<suite>-<key>``.

The key hashes what the root file system is made of (suite, variant, extra packages, the apt
sources written into it), so the ~2 minute debootstrap runs once: the rootfs tarball is kept
in the cache directory, and the image is re-imported from it when the docker data is gone.
``--refresh`` builds it again (e.g. to pick up security updates).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.k8s.config import cache_root
from devtools.k8s.dockerd import Docker

SUITE = "bookworm"
VARIANT = "minbase"
# apt may use an https mirror inside the image; everything else the Dockerfile installs.
INCLUDE = ("ca-certificates",)
APT_DIR = Path("/etc/apt")
IMAGE_NAME = "localhost/heketi-csi-base"
# What Docker's official debian:*-slim images configure, so that the base is as lean: apt keeps
# no package caches or translations, dpkg skips documentation, manuals and locales.
_CLEAN = "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb "
_CLEAN += "/var/cache/apt/*.bin || true"
APT_CONF = {
    "docker-clean": (
        f'DPkg::Post-Invoke {{ "{_CLEAN}"; }};\n'
        f'APT::Update::Post-Invoke {{ "{_CLEAN}"; }};\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
DPKG_EXCLUDES = (
    "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
    "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
    "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n"
    "path-exclude /usr/share/lintian/*\n"
)
# Bump when what is done to the rootfs after debootstrap changes (it is part of the key).
LAYOUT = 2
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"[debian-base] {msg}", flush=True)


@dataclass(frozen=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str = ""

    def line(self) -> str:
        opts = f"[signed-by={self.signed_by}] " if self.signed_by else ""
        return f"deb {opts}{self.uri} {self.suite} {' '.join(self.components)}"


def _one_line_sources(text: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed_by = ""
        if words and words[0].startswith("["):
            opts: list[str] = []
            while words:
                opts.append(words.pop(0))
                if opts[-1].endswith("]"):
                    break
            for opt in " ".join(opts).strip("[]").split():
                key, _, value = opt.partition("=")
                if key == "signed-by":
                    signed_by = value
        if len(words) >= 3:
            out.append(AptSource(words[0], words[1], tuple(words[2:]), signed_by))
    return out


def _deb822_sources(text: str) -> list[AptSource]:
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in para.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri, suite, components, fields.get("signed-by", "")))
    return out


def host_sources(apt_dir: Path = APT_DIR) -> list[AptSource]:
    """Every ``deb`` source apt on this host uses (sources.list, *.list, *.sources)."""
    found: list[AptSource] = []
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        found += _one_line_sources(main_list.read_text())
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.glob("*.list")) if parts.is_dir() else []:
        found += _one_line_sources(path.read_text())
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        found += _deb822_sources(path.read_text())
    return found


def debian_sources(suite: str = SUITE, apt_dir: Path = APT_DIR) -> list[AptSource]:
    """The host's Debian sources of ``suite`` and its -updates/-security suites."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    picked = [s for s in host_sources(apt_dir) if s.suite in wanted and "main" in s.components]
    if not any(s.suite == suite for s in picked):
        raise RuntimeError(
            f"no apt source for Debian {suite} main in {apt_dir}; debootstrap needs a Debian mirror"
        )
    # Only the main component: that is what debootstrap fetches and the image needs.
    return [AptSource(s.uri, s.suite, ("main",), s.signed_by) for s in picked]


def cache_key(sources: list[AptSource], suite: str = SUITE) -> str:
    material = json.dumps(
        {
            "suite": suite,
            "variant": VARIANT,
            "include": INCLUDE,
            "layout": LAYOUT,
            "sources": [s.line() for s in sources],
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def image_ref(key: str, suite: str = SUITE) -> str:
    return f"{IMAGE_NAME}:{suite}-{key}"


def rootfs_tarball(key: str, suite: str = SUITE) -> Path:
    return cache_root() / "debian-base" / f"{suite}-{VARIANT}-{key}.tar"


def _chroot(rootfs: Path, *argv: str) -> None:
    env = {"PATH": PATH_ENV.removeprefix("PATH="), "DEBIAN_FRONTEND": "noninteractive"}
    env["LC_ALL"] = "C"
    subprocess.run(["chroot", str(rootfs), *argv], check=True, env=env, stdout=subprocess.DEVNULL)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def slim_down(rootfs: Path, sources: list[AptSource]) -> None:
    """Apt sources with updates and security, the slim images' apt and dpkg settings, pending
    (security) upgrades applied, and no caches, docs or manuals left."""
    apt = rootfs / "etc" / "apt"
    (apt / "sources.list").write_text("".join(s.line() + "\n" for s in sources))
    for name, text in APT_CONF.items():
        (apt / "apt.conf.d" / name).write_text(text)
    (rootfs / "etc" / "dpkg" / "dpkg.cfg.d" / "docker").write_text(DPKG_EXCLUDES)
    _chroot(rootfs, "apt-get", "update")
    _chroot(rootfs, "apt-get", "-y", "upgrade")
    _chroot(rootfs, "apt-get", "clean")
    junk = ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "usr/share/man/*", "usr/share/info/*")
    for pattern in (*junk, "usr/share/lintian/*", "var/log/*.log"):
        for entry in rootfs.glob(pattern):
            _remove(entry)
    for doc in (rootfs / "usr" / "share" / "doc").glob("*/*"):
        if doc.name != "copyright":
            _remove(doc)


def debootstrap(dest_tar: Path, sources: list[AptSource], suite: str = SUITE) -> float:
    """Make the rootfs tarball; returns the seconds debootstrap took."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: apt-get install debootstrap")
    mirror = next(s.uri for s in sources if s.suite == suite)
    dest_tar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hcsi-debootstrap-", dir=dest_tar.parent) as tmpd:
        rootfs = Path(tmpd) / "rootfs"
        log(f"debootstrap --variant={VARIANT} {suite} from {mirror} ...")
        t0 = time.monotonic()
        subprocess.run(
            [
                "debootstrap",
                f"--variant={VARIANT}",
                "--components=main",
                f"--include={','.join(INCLUDE)}",
                suite,
                str(rootfs),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        took = time.monotonic() - t0
        log(f"debootstrap done in {took:.0f}s")
        slim_down(rootfs, sources)
        tmp_tar = dest_tar.with_name(dest_tar.name + ".tmp")
        subprocess.run(
            [
                "tar",
                "-C",
                str(rootfs),
                "--numeric-owner",
                "--xattrs",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-cf",
                str(tmp_tar),
                ".",
            ],
            check=True,
        )
        tmp_tar.rename(dest_tar)
    for older in dest_tar.parent.glob(f"{suite}-{VARIANT}-*.tar"):
        if older != dest_tar:
            older.unlink()
    return took


def base_image_ref(suite: str = SUITE) -> str:
    """The reference the base image has (or will have once built): it names its recipe."""
    return image_ref(cache_key(debian_sources(suite), suite), suite)


def ensure_base_image(docker: Docker, refresh: bool = False, suite: str = SUITE) -> str:
    """The base image's reference in ``docker``; debootstrap only when nothing is cached."""
    sources = debian_sources(suite)
    key = cache_key(sources, suite)
    ref = image_ref(key, suite)
    tar = rootfs_tarball(key, suite)
    if refresh:
        tar.unlink(missing_ok=True)
    elif docker.has_image(ref):
        log(f"{ref}: present")
        return ref
    if not tar.is_file():
        debootstrap(tar, sources, suite)
    t0 = time.monotonic()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tar.stat().st_mtime))
    docker.run(
        "import",
        "--change",
        f"ENV {PATH_ENV}",
        "--change",
        'CMD ["/bin/bash"]',
        "--change",
        f"LABEL org.opencontainers.image.created={created}",
        str(tar),
        ref,
        capture=True,
    )
    log(
        f"{ref}: imported in {time.monotonic() - t0:.0f}s "
        f"({docker.image_size(ref) / 2**20:.0f} MiB)"
    )
    return ref
