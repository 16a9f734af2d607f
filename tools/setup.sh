#!/usr/bin/env bash
# Prepare this machine for heketi-csi's demo and tests. Idempotent; run as root on Debian.
#   - GlusterFS server and client from Debian (when missing), glusterd started
#   - a virtualenv in .venv with the package and its dev extra
#   - csi-sanity built with `go install` into a cache directory named by its version (once per
#     version; the Makefile and tests/conformance read CSI_SANITY_VERSION from here)
set -euo pipefail
cd "$(dirname "$0")/.."

CSI_SANITY_VERSION=v5.6.0
CACHE_BIN="${HEKETI_CSI_CACHE:-$HOME/.cache/heketi-csi}/bin"
SANITY_BIN="$(dirname "$CACHE_BIN")/csi-sanity-$CSI_SANITY_VERSION/bin"
want_sanity=1
[ "${1:-}" = "--no-sanity" ] && want_sanity=0

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (GlusterFS FUSE mounts and glusterd need it)" >&2
    exit 1
fi

missing=()
command -v glusterd >/dev/null 2>&1 || missing+=(glusterfs-server)
command -v mount.glusterfs >/dev/null 2>&1 || [ -x /sbin/mount.glusterfs ] || missing+=(glusterfs-client)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
# The Heketi simulator's sized bricks (docs/simulator.md): an XFS file system per brick.
command -v xfs_growfs >/dev/null 2>&1 || missing+=(xfsprogs)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! pgrep -x glusterd >/dev/null 2>&1; then
    step "starting glusterd"
    mkdir -p /var/log/glusterfs /var/run/gluster
    glusterd -p /var/run/glusterd.pid
    for _ in $(seq 1 50); do
        gluster --mode=script pool list >/dev/null 2>&1 && break
        sleep 0.2
    done
    gluster --mode=script pool list >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    step "creating the virtualenv .venv"
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    step "installing heketi-csi and its dev tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# The Compose Specification schema, for validating docker-compose.yml offline: it ships in
# docker-compose v1's wheel, which is downloaded (not installed: it pins old PyYAML/jsonschema).
WHEELS="$(dirname "$CACHE_BIN")/wheels"
if [ ! -e "$WHEELS/docker_compose-1.29.2-py2.py3-none-any.whl" ]; then
    step "downloading the Compose schema's wheel into $WHEELS"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
        docker-compose==1.29.2
fi

if [ "$want_sanity" = 1 ] && [ ! -x "$SANITY_BIN/csi-sanity" ]; then
    if ! command -v go >/dev/null 2>&1; then
        cat >&2 <<MSG
setup: ERROR: the Go toolchain is missing, so csi-sanity (the CSI conformance suite) cannot
be built. Install Go (https://go.dev/doc/install, or Debian's golang-go) and run again.
MSG
        exit 1
    fi
    step "building csi-sanity $CSI_SANITY_VERSION into $SANITY_BIN"
    mkdir -p "$SANITY_BIN"
    GOBIN="$SANITY_BIN" GOFLAGS=-mod=mod go install \
        "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
fi
step "setup done"
