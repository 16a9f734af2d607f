#!/usr/bin/env bash
# Install and build what the tests need on top of tools/setup.sh (which is all the demo needs).
# Idempotent; run as root on Debian; `make test` and `make check` run it first. Each step says
# what it does and how long it took; everything built is cached by version under
# ${HEKETI_CSI_CACHE:-~/.cache/heketi-csi}, so a second run only checks.
#   - the Compose schema (docker-compose 1.29.2's wheel, downloaded, not installed)
#   - Debian packages the suites use: openssl (the Heketi client's TLS tests), docker.io and
#     docker-compose (the compose stack), debootstrap (the driver image's Debian base)
#   - a Go toolchain that can build the tools below (tools/go.sh: the machine's, or one from
#     the Go module proxy)
#   - csi-sanity CSI_SANITY_VERSION, with `go install` (tests/conformance reads the version here)
#   - Kubernetes, etcd, the CSI sidecars and helm (`python -m devtools.k8s build`): the fast
#     suite's manifest, chart and API-server tests run kubectl, helm, etcd and kube-apiserver
# The upstream storage suite's e2e.test is built by `make test-e2e`, the only one that runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/apt.sh
. tools/apt.sh

CSI_SANITY_VERSION=v5.6.0
CACHE="${HEKETI_CSI_CACHE:-$HOME/.cache/heketi-csi}"
SANITY_BIN="$CACHE/csi-sanity-$CSI_SANITY_VERSION/bin"
PY=.venv/bin/python
T0="${HCSI_T0:-$(date +%s)}"

step() { printf '\n==> [%5ds] test-setup: %s\n' "$(($(date +%s) - T0))" "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "test-setup: run as root (the suites mount, make namespaces and run a Kubernetes)" >&2
    exit 1
fi
if [ ! -x "$PY" ]; then
    echo "test-setup: no virtualenv at .venv: run 'bash tools/setup.sh' first" >&2
    exit 1
fi

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
apt_install_missing "${missing[@]}"

# The Compose Specification schema, for validating docker-compose.yml offline: it ships in
# docker-compose v1's wheel, which is downloaded (not installed: it pins old PyYAML/jsonschema).
WHEELS="$CACHE/wheels"
if [ ! -e "$WHEELS/docker_compose-1.29.2-py2.py3-none-any.whl" ]; then
    step "downloading the Compose schema's wheel into $WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" docker-compose==1.29.2
fi

step "Go toolchain (tools/go.sh)"
GO="$(bash tools/go.sh)"
export PATH="$(dirname "$GO"):$PATH"

if [ ! -x "$SANITY_BIN/csi-sanity" ]; then
    step "building csi-sanity $CSI_SANITY_VERSION into $SANITY_BIN (once per version)"
    mkdir -p "$SANITY_BIN"
    GOBIN="$SANITY_BIN" GOFLAGS=-mod=mod GOTOOLCHAIN=local "$GO" install \
        "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
else
    step "csi-sanity $CSI_SANITY_VERSION: built"
fi

step "Kubernetes, etcd, the CSI sidecars and helm from the Go module proxy (devtools.k8s build)"
"$PY" -m devtools.k8s build

step "done"
