#!/usr/bin/env bash
# Print the path of a Go toolchain that can build the project's Go tools (csi-sanity,
# Kubernetes, etcd, the CSI sidecars, helm, ...), installing one when the machine has none.
# Progress goes to stderr; stdout is the path of the `go` binary only, so callers can do
#   GO="$(bash tools/go.sh)"
#
# Which Go: GO_MIN is the newest `go` directive of the go.mod files under devtools/k8s/gomod/
# (tests/unit/test_setup_scripts.py keeps it so). A `go` on PATH that is at least GO_MIN is used
# as it is. Otherwise Go GO_VERSION is taken from the Go module proxy, where the official
# toolchains are published as the module golang.org/toolchain, and kept in the cache: any Go
# downloads that module with `go mod download` (Debian 12's golang-go is 1.19, too old for the
# build and for GOTOOLCHAIN, but it can do that), and its tree is copied out of the module
# cache. With no Go at all, Debian's golang-go is installed first, only for that download.
# Nothing is fetched from anywhere but the module proxy and Debian's archive.
set -euo pipefail

GO_MIN=1.26.0
GO_VERSION=1.26.8
CACHE="${HEKETI_CSI_CACHE:-$HOME/.cache/heketi-csi}"
DEST="$CACHE/go-$GO_VERSION"

say() { printf '[go] %s\n' "$*" >&2; }
die() { printf 'go.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# version_of GO_BINARY -> "1.26.8" (empty when it does not run)
version_of() {
    "$1" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p'
}
# at_least A B: A >= B as dotted versions
at_least() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

if command -v go >/dev/null 2>&1; then
    have="$(version_of "$(command -v go)")"
    if [ -n "$have" ] && at_least "$have" "$GO_MIN"; then
        say "using Go $have at $(command -v go) (the build needs $GO_MIN or newer)"
        command -v go
        exit 0
    fi
    say "Go ${have:-of unknown version} at $(command -v go) is older than $GO_MIN, which the build needs"
fi

if [ -x "$DEST/bin/go" ] && [ "$(version_of "$DEST/bin/go")" = "$GO_VERSION" ]; then
    say "using Go $GO_VERSION from $DEST"
    echo "$DEST/bin/go"
    exit 0
fi

bootstrap="$(command -v go || true)"
if [ -z "$bootstrap" ]; then
    [ "$(id -u)" -eq 0 ] || die "no Go on PATH, and installing Debian's golang-go needs root"
    say "no Go on PATH: installing Debian's golang-go to fetch Go $GO_VERSION with"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq golang-go >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq golang-go >/dev/null
    }
    bootstrap="$(command -v go)" || die "golang-go installed, but no go on PATH"
fi

say "fetching Go $GO_VERSION (module golang.org/toolchain, about 70 MB) into $DEST"
module="golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$("$bootstrap" env GOARCH)"
work="$(mktemp -d "$CACHE/.go-download.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE"; mktemp -d "$CACHE/.go-download.XXXXXX"; })"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
dir="$(cd "$work" && GOMODCACHE="$work/mod" GOPATH="$work/gopath" GOFLAGS=-modcacherw \
    GO111MODULE=on GOTOOLCHAIN=local "$bootstrap" mod download -json "$module" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[ -n "$dir" ] && [ -f "$dir/bin/go" ] || die "the module proxy gave no Go toolchain for $module"
rm -rf "$DEST.tmp"
cp -a "$dir" "$DEST.tmp"
# Module zips carry no file modes: make the tools executable again.
chmod -R u+w "$DEST.tmp"
chmod +x "$DEST.tmp"/bin/* "$DEST.tmp"/pkg/tool/*/*
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
got="$(version_of "$DEST/bin/go")"
[ "$got" = "$GO_VERSION" ] || die "the fetched toolchain reports Go '${got}', not $GO_VERSION"
say "Go $GO_VERSION ready at $DEST"
echo "$DEST/bin/go"
