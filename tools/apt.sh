# Sourced by tools/setup.sh and tools/test-setup.sh (they define `step`).
# apt_install_missing PACKAGE...: install these Debian packages, refreshing the package lists
# once first; nothing happens without arguments.
apt_install_missing() {
    [ "$#" -gt 0 ] || return 0
    step "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
