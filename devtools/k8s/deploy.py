"""Deploy the driver into the local cluster the way users deploy it, and wait until it serves.

    python -m devtools.k8s deploy      # (make e2e does this first)

1. build the driver images from the repository's Dockerfile if the build context changed,
   and push them to the cluster's registry (`driver_image.publish`, `registry.py`);
2. render `k8s/local` with kustomize (kubectl's built-in; its `images:` name the registry's
   repositories, tag `local`) and apply it, with the tag pinned to this build's content tag
   (`ctx-<hash>`) so that a changed driver rolls out and an unchanged one leaves the running
   pods alone. kubelet pulls the images from the registry (`imagePullPolicy: IfNotPresent`);
   nothing imports them into containerd;
3. wait until the Heketi simulator, the controller and the node plugin are rolled out and
   kubelet lists the driver on the node's CSINode."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import IO

import yaml

from devtools.k8s import driver_image, registry
from devtools.k8s.cluster import is_mountpoint, kubectl, log, run, start_registry, status
from devtools.k8s.config import NODE_NAME, SIM_BRICK_ROOT, STATE_DIR

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "k8s" / "local"
BASE = REPO / "k8s" / "base"
DRIVER_NAME = "glusterfs.heketi.csi.io"
ROLLOUTS = (
    ("glusterfs", "deployment/heketi-sim"),
    ("heketi-csi", "statefulset/heketi-csi-controller"),
    ("heketi-csi", "daemonset/heketi-csi-node"),
)
ROLLOUT_TIMEOUT = "300s"
REGISTRATION_TIMEOUT = 120.0


def rendered(context: str) -> str:
    """k8s/local as kustomize renders it, with the `local` image tags pinned to `context`."""
    text = kubectl("kustomize", str(OVERLAY)).stdout
    for image in driver_image.REGISTRY_IMAGES.values():
        text = text.replace(f"{image}:{driver_image.LOCAL_TAG}", f"{image}:ctx-{context}")
    return text


def apply(manifest: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="k8s-local-") as f:
        f.write(manifest)
        f.flush()
        log(kubectl("apply", "-f", f.name).stdout.strip())


def registered() -> bool:
    out = kubectl("get", "csinode", NODE_NAME, "-o", "json", check=False)
    if out.returncode != 0:
        return False
    drivers = json.loads(out.stdout).get("spec", {}).get("drivers") or []
    return any(d.get("name") == DRIVER_NAME for d in drivers)


# Set by the API server; dropped from a saved object so that it can be created again.
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def _driver_file(f: IO[str]) -> str:
    """Write the driver's objects (k8s/base but its Namespace, which holds the Heketi
    Secret) to `f`; return its name."""
    objects = yaml.safe_load_all(kubectl("kustomize", str(BASE)).stdout)
    yaml.safe_dump_all([o for o in objects if o and o["kind"] != "Namespace"], f)
    f.flush()
    return f.name


def saved_driver() -> str:
    """The driver's objects as they are in the cluster, for `restore_driver`."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="k8s-base-") as f:
        live = yaml.safe_load(kubectl("get", "-f", _driver_file(f), "-o", "yaml").stdout)
    for obj in live["items"]:
        obj.pop("status", None)
        for key in SERVER_FIELDS:
            obj["metadata"].pop(key, None)
    return yaml.safe_dump_all(live["items"])


def remove_driver() -> None:
    """Delete the driver's objects and wait until its pods are gone: room for another
    install of the same CSIDriver, e.g. the Helm chart (tests/e2e/test_install_paths.py).
    Heketi, the Secret and the classes stay."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="k8s-base-") as f:
        log(kubectl("delete", "--ignore-not-found", "--wait", "-f", _driver_file(f)).stdout)
    kubectl("-n", "heketi-csi", "wait", "--for=delete", "pod",
            "-l", "app.kubernetes.io/part-of=heketi-csi", f"--timeout={ROLLOUT_TIMEOUT}")


def restore_driver(saved: str) -> None:
    """Put back the objects `saved_driver` returned (created, or taken over from whatever
    is left of another install) and wait until the driver serves."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="k8s-driver-") as f:
        f.write(saved)
        f.flush()
        log(kubectl("apply", "--server-side", "--force-conflicts", "-f", f.name).stdout.strip())
    for namespace, what in ROLLOUTS:
        if namespace != "heketi-csi":
            continue
        kubectl("-n", namespace, "rollout", "status", what, f"--timeout={ROLLOUT_TIMEOUT}")
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while not registered():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{DRIVER_NAME} is not on CSINode {NODE_NAME}")
        time.sleep(0.5)


def shared_brick_root() -> None:
    """The simulator pod mounts each brick's file system below SIM_BRICK_ROOT with
    Bidirectional propagation; the host's glusterd sees them only if that directory is a
    shared mount (a bind onto itself; `down` removes it)."""
    SIM_BRICK_ROOT.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(SIM_BRICK_ROOT):
        run(["mount", "--bind", str(SIM_BRICK_ROOT), str(SIM_BRICK_ROOT)])
    run(["mount", "--make-rshared", str(SIM_BRICK_ROOT)])


def deploy() -> dict[str, float]:
    if not status():
        raise SystemExit("the local cluster is not up: `make k8s-up` first")
    shared_brick_root()
    times: dict[str, float] = {}
    t0 = time.monotonic()
    containerd_toml = STATE_DIR / "containerd.toml"
    if str(registry.HOSTS_DIR) not in containerd_toml.read_text():
        raise SystemExit("this cluster's containerd was started before the harness had a "
                         "registry and cannot pull from it: `python -m devtools.k8s down` "
                         "and `up` again")
    if not registry.answers():
        start_registry()
    result = driver_image.publish()
    driver_image.report(result)
    times["images"] = time.monotonic() - t0
    t0 = time.monotonic()
    apply(rendered(result.context))
    for namespace, what in ROLLOUTS:
        log(f"waiting for {namespace}/{what} ...")
        kubectl("-n", namespace, "rollout", "status", what, f"--timeout={ROLLOUT_TIMEOUT}")
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while not registered():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{DRIVER_NAME} is not on CSINode {NODE_NAME} after "
                               f"{REGISTRATION_TIMEOUT:.0f} s")
        time.sleep(0.5)
    times["rollout"] = time.monotonic() - t0
    log(f"driver deployed (images {times['images']:.0f}s, rollout {times['rollout']:.0f}s)")
    return times
