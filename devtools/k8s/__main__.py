"""python -m devtools.k8s build|up|deploy|down|kubeconfig|status|images|smoke"""

from __future__ import annotations

import argparse
import sys

from devtools.k8s import build, cluster, images
from devtools.k8s.config import KUBECONFIG


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.k8s", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or find cached) Kubernetes, etcd and sidecars")
    b.add_argument("components", nargs="*", help="only these (etcd, kubernetes, external-...)")
    b.add_argument(
        "--save-gomod",
        action="store_true",
        help="regenerate go.mod/go.sum and store them under devtools/k8s/gomod/",
    )
    u = sub.add_parser("up", help="start the single-node cluster (idempotent)")
    u.add_argument("--skip-build", action="store_true")
    sub.add_parser("deploy", help="build the driver image, push it to the cluster's registry, "
                   "apply k8s/local (pulling it), wait "
                   "until the driver serves")
    sub.add_parser("down", help="stop the cluster and undo every host change (idempotent)")
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path")
    sub.add_parser("status", help="processes and node")
    sub.add_parser("images", help="(re)import pause, busybox and sidecar images")
    sub.add_parser("smoke", help="run a busybox pod writing to an emptyDir (cluster must be up)")
    sub.add_parser("e2e-upstream", add_help=False, help="the upstream storage suite (e2e.test) "
                   "against the deployed driver (e2e-upstream --help: options)")
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["e2e-upstream"]:
        from devtools.k8s import upstream

        return upstream.main(args[1:])
    a = p.parse_args(args)
    if a.cmd == "build":
        build.build_all(a.components, save_gomod=a.save_gomod)
    elif a.cmd == "up":
        cluster.up(skip_build=a.skip_build)
    elif a.cmd == "deploy":
        from devtools.k8s import deploy

        deploy.deploy()
    elif a.cmd == "down":
        return 1 if cluster.down() else 0
    elif a.cmd == "kubeconfig":
        print(KUBECONFIG)
    elif a.cmd == "status":
        return 0 if cluster.status() else 1
    elif a.cmd == "images":
        print("\n".join(images.ensure_images()))
    elif a.cmd == "smoke":
        cluster.smoke()
    return 0


if __name__ == "__main__":
    sys.exit(main())
