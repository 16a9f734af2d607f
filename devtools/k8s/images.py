"""Container images without a registry: docker-archive tarballs written from a rootfs.

``write_docker_archive`` turns a directory into a ``docker save``-style tarball (manifest.json,
an image config, one layer tar); ``import_archive`` loads such a tarball (or one made by
``docker save``) into the cluster's containerd under the names it carries. The harness builds
the pause image (``pause.c``), a busybox image (Debian's busybox-static) and the CSI sidecar
images (the cached binaries, named as upstream names them).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devtools.k8s import build
from devtools.k8s.config import CONTAINERD_SOCKET, HERE, cache_root, versions

DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
# the busybox image is Debian's busybox-static, also tagged under these names
BUSYBOX_ALIASES = ["docker.io/library/busybox:stable"]


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def layer_tar(rootfs: Path) -> bytes:
    """A deterministic uncompressed tar of ``rootfs`` (owner root, mtime 0, symlinks kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(
                path, arcname=str(path.relative_to(rootfs)), recursive=False, filter=_tar_filter
            )
    return buf.getvalue()


def write_docker_archive(
    rootfs: Path,
    out: Path,
    ref: str | Sequence[str],
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] = DEFAULT_ENV,
    workdir: str = "/",
    user: str = "",
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Write ``rootfs`` as a one-layer docker-archive tarball tagged ``ref`` (name:tag)."""
    refs = [ref] if isinstance(ref, str) else list(ref)
    layer = layer_tar(rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    cfg: dict[str, object] = {"Env": list(env), "WorkingDir": workdir}
    if entrypoint is not None:
        cfg["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        cfg["Cmd"] = list(cmd)
    if user:
        cfg["User"] = user
    if labels:
        cfg["Labels"] = dict(labels)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "devtools/k8s"}],
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": refs, "Layers": [layer_name]}]
    ).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w") as tar:
        for name, data in ((layer_name, layer), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp.rename(out)
    return out


def _ctr(*args: str, address: Path = CONTAINERD_SOCKET, check: bool = True) -> str:
    proc = subprocess.run(
        ["ctr", "--address", str(address), "-n", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def normalize(ref: str) -> str:
    """Docker-style name normalisation: busybox:1 -> docker.io/library/busybox:1."""
    name = ref
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif "." not in first and ":" not in first and first != "localhost":
        name = "docker.io/" + name
    return name


def image_names(address: Path = CONTAINERD_SOCKET) -> set[str]:
    return set(_ctr("images", "ls", "-q", address=address).split())


def import_archive(archive: Path, address: Path = CONTAINERD_SOCKET) -> None:
    """Load a docker-archive tarball (ours or ``docker save``'s) into namespace k8s.io."""
    _ctr("images", "import", str(archive), address=address)


def static_rootfs(dest: Path, files: Mapping[str, Path]) -> Path:
    """A minimal rootfs: /etc/passwd, /etc/group, /tmp, and ``files`` (path in image -> src)."""
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "etc").mkdir(parents=True)
    (dest / "tmp").mkdir()
    (dest / "tmp").chmod(0o1777)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    for inside, src in files.items():
        target = dest / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def pause_binary() -> Path:
    out = cache_root() / "pause" / "pause"
    src = HERE / "pause.c"
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-static", "-O2", "-s", "-o", str(out), str(src)], check=True)
    return out


def busybox_rootfs(dest: Path) -> Path:
    bb = Path("/bin/busybox")
    static_rootfs(dest, {"/bin/busybox": bb})
    applets = subprocess.run(
        [str(bb), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (dest / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    (dest / "root").mkdir()
    return dest


def sidecar_images() -> dict[str, str]:
    """Sidecar image name -> binary name, named as upstream names them."""
    v = versions()
    base = "registry.k8s.io/sig-storage"
    return {
        f"{base}/csi-provisioner:{v.provisioner}": "csi-provisioner",
        f"{base}/csi-attacher:{v.attacher}": "csi-attacher",
        f"{base}/csi-snapshotter:{v.snapshotter}": "csi-snapshotter",
        f"{base}/snapshot-controller:{v.snapshotter}": "snapshot-controller",
        f"{base}/csi-resizer:{v.resizer}": "csi-resizer",
    }


def ensure_images(address: Path = CONTAINERD_SOCKET) -> list[str]:
    """Import pause, busybox and the sidecar images that containerd lacks; returns those."""
    v = versions()
    have = image_names(address)
    imported: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hcsi-img-") as tmpd:
        tmp = Path(tmpd)

        def add(
            ref: str | list[str],
            rootfs: Callable[[], Path],
            entrypoint: Sequence[str] | None,
            cmd: Sequence[str] | None = None,
        ) -> None:
            refs = [ref] if isinstance(ref, str) else ref
            if all(normalize(r) in have for r in refs):
                return
            archive = write_docker_archive(rootfs(), tmp / "image.tar", refs, entrypoint, cmd)
            import_archive(archive, address)
            archive.unlink()
            imported.extend(refs)

        add(
            v.pause_image,
            lambda: static_rootfs(tmp / "pause", {"/pause": pause_binary()}),
            ["/pause"],
        )
        add([v.busybox_image, *BUSYBOX_ALIASES], lambda: busybox_rootfs(tmp / "bb"), None, ["sh"])
        for ref, name in sidecar_images().items():
            binpath = build.binary(name)
            if not binpath.is_file():
                continue
            add(
                ref,
                lambda n=name, b=binpath: static_rootfs(tmp / n, {f"/{n}": b}),  # type: ignore[misc]
                [f"/{name}"],
            )
    return imported


if __name__ == "__main__":  # pragma: no cover
    print(ensure_images(Path(os.environ.get("CONTAINERD_ADDRESS", str(CONTAINERD_SOCKET)))))
