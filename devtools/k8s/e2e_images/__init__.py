"""Local stand-ins for the images the upstream storage specs (``e2e.test``) run.

The specs name their images (``k8s.io/kubernetes/test/utils/image/manifest.go``) and pull
them when missing; there is no registry here, so images of ours are imported under those
names. What the External.Storage specs of v1.34 use, found in the e2e source:

- ``e2e-test-images/busybox:1.37.0-1``: the default test image (``e2epod.GetDefaultTestImage``)
  of nearly every spec's pods, which run ``sh -c`` scripts of busybox commands;
- ``e2e-test-images/nginx:1.14-4``: only the pod of "should allow exec of files on the
  volume", with a ``sh -c`` command of its own: busybox's shell is all it needs;
- ``e2e-test-images/jessie-dnsutils:1.7``: the pods of the multiVolume "concurrently access
  the single volume" specs (``sleep`` loops, ``sh -c`` checks): busybox again;
- ``e2e-test-images/agnhost:2.56``: the subPath specs (``agnhost mounttest``) and the
  host-exec pods (``agnhost pause``, then ``nsenter --mount=/rootfs/proc/1/ns/mnt -- sh -c``):
  busybox plus ``agnhost.c`` (pause and mounttest) and the ``nsenter`` wrapper that falls back
  to ``chroot /rootfs`` where PID 1's mount namespace cannot be entered.

``registry.k8s.io/pause:3.10.1`` is the sandbox image, which ``devtools.k8s.images`` already
provides; no selected spec runs it as a container. Nothing else is needed: NFS server and
provisioner images belong to in-tree drivers' specs, not to External.Storage.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from devtools.k8s import images
from devtools.k8s.config import CONTAINERD_SOCKET, cache_root

HERE = Path(__file__).resolve().parent
E2E_REGISTRY = "registry.k8s.io/e2e-test-images"
# plain busybox rootfs, under every name whose pods only need a shell and coreutils
BUSYBOX_LIKE = [
    f"{E2E_REGISTRY}/busybox:1.37.0-1",
    f"{E2E_REGISTRY}/nginx:1.14-4",
    f"{E2E_REGISTRY}/jessie-dnsutils:1.7",
]
AGNHOST = f"{E2E_REGISTRY}/agnhost:2.56"


def agnhost_binary() -> Path:
    """``agnhost.c`` built static (cached; rebuilt when the source is newer)."""
    out = cache_root() / "e2e-images" / "agnhost"
    src = HERE / "agnhost.c"
    if not out.is_file() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".agnhost.tmp")
        subprocess.run(
            ["gcc", "-static", "-O2", "-s", "-Wall", "-Werror", "-o", str(tmp), str(src)],
            check=True,
        )
        tmp.rename(out)
    return out


def agnhost_rootfs(dest: Path) -> Path:
    """busybox + /agnhost + the nsenter wrapper in /usr/local/bin (ahead of /bin in PATH)."""
    images.busybox_rootfs(dest)
    shutil.copy2(agnhost_binary(), dest / "agnhost")
    wrapper = dest / "usr" / "local" / "bin" / "nsenter"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "nsenter", wrapper)
    wrapper.chmod(0o755)
    return dest


def ensure_e2e_images(address: Path = CONTAINERD_SOCKET, force: bool = False) -> list[str]:
    """Import the stand-ins that containerd lacks (all of them with ``force``); returns those."""
    have = set() if force else images.image_names(address)
    imported: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hcsi-e2e-img-") as tmpd:
        tmp = Path(tmpd)
        if not all(ref in have for ref in BUSYBOX_LIKE):
            archive = images.write_docker_archive(
                images.busybox_rootfs(tmp / "bb"), tmp / "bb.tar", BUSYBOX_LIKE, None, ["sh"]
            )
            images.import_archive(archive, address)
            imported += BUSYBOX_LIKE
        if AGNHOST not in have:
            archive = images.write_docker_archive(
                agnhost_rootfs(tmp / "agnhost"), tmp / "agnhost.tar", AGNHOST, ["/agnhost"],
                ["pause"],
            )
            images.import_archive(archive, address)
            imported.append(AGNHOST)
    return imported
