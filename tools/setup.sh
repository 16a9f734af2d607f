#!/usr/bin/env bash
# Prepare this machine for heketi-csi's demo (and, with tools/test-setup.sh, its tests).
# Idempotent; run as root on Debian. Needs no Go: what the tests build is test-setup.sh's.
#   - GlusterFS server and client, xfsprogs, python3-venv, make, procps from Debian (when
#     missing), glusterd started
#   - a virtualenv in .venv with the package and its dev extra
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/apt.sh
. tools/apt.sh

T0="${HCSI_T0:-$(date +%s)}"
step() { printf '\n==> [%5ds] setup: %s\n' "$(($(date +%s) - T0))" "$*"; }

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
apt_install_missing "${missing[@]}"

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
    # setuptools adds an informational note to every editable install (folders named like the
    # package may shadow it; ours is the package itself): not a warning about this project.
    PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

step "done"
