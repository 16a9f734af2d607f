#!/usr/bin/env bash
# End-to-end tests on a kind cluster: create the cluster, build and load the images,
# install the VolumeSnapshot CRDs and snapshot-controller, deploy k8s/e2e (the driver
# plus the Heketi simulator backed by a real glusterd: real Heketi cannot run in kind),
# then run the tests of tests/e2e (the same ones the local cluster runs) against it.
#
#   tests/e2e/run.sh                      # newest kind node image
#   E2E_NODE_IMAGE=kindest/node:v1.26.15 tests/e2e/run.sh   # oldest supported Kubernetes
#   E2E_KEEP_CLUSTER=1 tests/e2e/run.sh -k lifecycle         # keep the cluster afterwards
#
# A cluster of that name that already exists is reused and never deleted.
#
# Needs: docker (with a running daemon), kind, kubectl, git (kustomize fetches the
# snapshotter manifests), network access, /dev/fuse on the host, and a Python with this
# project's dev dependencies (PYTHON, default python3). Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "$0")/../.."

CLUSTER=${E2E_CLUSTER:-heketi-csi-e2e}
NODE_IMAGE=${E2E_NODE_IMAGE:-}
SNAPSHOTTER_VERSION=${E2E_SNAPSHOTTER_VERSION:-v8.5.0}
KEEP_CLUSTER=${E2E_KEEP_CLUSTER:-0}
PYTHON=${PYTHON:-python3}
CONTEXT="kind-${CLUSTER}"
DRIVER_IMAGE=ghcr.io/heketi-csi/heketi-csi:e2e
DEV_IMAGE=ghcr.io/heketi-csi/heketi-csi-dev:e2e
TEST_IMAGE=docker.io/library/busybox:1.36.1

die() { echo "run.sh: $*" >&2; exit 1; }
step() { echo; echo "=== $*"; }
k() { kubectl --context "$CONTEXT" "$@"; }

for tool in docker kind kubectl git; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"
[ -c /dev/fuse ] || die "/dev/fuse is missing on this host (modprobe fuse)"

dump_diagnostics() {
    step "diagnostics"
    k get pods,pvc,pv,volumeattachments -A -o wide || true
    k get volumesnapshots,volumesnapshotcontents -A || true
    k -n heketi-csi describe pods || true
    for target in statefulset/heketi-csi-controller daemonset/heketi-csi-node; do
        k -n heketi-csi logs "$target" --all-containers --tail=200 || true
    done
    k -n glusterfs logs deployment/heketi-sim --all-containers --tail=200 || true
}

finish() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        dump_diagnostics
    fi
    if [ "$KEEP_CLUSTER" = 1 ] || [ "$CREATED" = 0 ]; then
        echo "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
    else
        kind delete cluster --name "$CLUSTER" || true
    fi
    exit "$status"
}

step "kind cluster $CLUSTER"
CREATED=0
if ! kind get clusters | grep -qx "$CLUSTER"; then
    CREATED=1
    kind create cluster --name "$CLUSTER" --config tests/e2e/kind-config.yaml \
        ${NODE_IMAGE:+--image "$NODE_IMAGE"} --wait 180s
fi
trap finish EXIT
k label nodes --all storagenode=glusterfs --overwrite

step "images"
docker build --target runtime -t "$DRIVER_IMAGE" .
docker build --target dev -t "$DEV_IMAGE" .
docker pull "$TEST_IMAGE"
kind load docker-image --name "$CLUSTER" "$DRIVER_IMAGE" "$DEV_IMAGE" "$TEST_IMAGE"

step "VolumeSnapshot CRDs and snapshot-controller $SNAPSHOTTER_VERSION"
snapshotter=https://github.com/kubernetes-csi/external-snapshotter
k apply -k "${snapshotter}/client/config/crd?ref=${SNAPSHOTTER_VERSION}"
k -n kube-system apply -k "${snapshotter}/deploy/kubernetes/snapshot-controller?ref=${SNAPSHOTTER_VERSION}"
k -n kube-system rollout status deployment/snapshot-controller --timeout=300s

step "driver and Heketi simulator (k8s/e2e)"
k apply -k k8s/e2e
k -n glusterfs rollout status deployment/heketi-sim --timeout=300s
k -n heketi-csi rollout status statefulset/heketi-csi-controller --timeout=300s
k -n heketi-csi rollout status daemonset/heketi-csi-node --timeout=300s

step "tests"
# The Heketi simulator listens on the node's network (hostNetwork), port 18080.
NODE_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
    "${CLUSTER}-control-plane")
HEKETI_CSI_E2E_KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}" HEKETI_CSI_E2E_CONTEXT="$CONTEXT" \
HEKETI_CSI_E2E_HEKETI_URL="http://${NODE_IP}:18080" \
    "$PYTHON" -m pytest tests/e2e -v -p no:cacheprovider "$@"
