# Sourced by scripts/install-*.sh: root through sudo when needed, and
# apt-get installs that start no system service.
# shellcheck shell=bash

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# apt_install NAME PACKAGE...: install the packages; NAME prefixes the messages.
apt_install() {
    local name=$1
    shift
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
        echo "$name: installing $* needs root: run this script as root, or install sudo." >&2
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$name: apt-get not found; install $* by hand." >&2
        return 1
    fi
    # Debian's maintainer scripts start services through invoke-rc.d, which
    # asks policy-rc.d first: exit status 101 means "do not start". Put one in
    # place for the duration of the install unless the system has its own.
    local policy=/usr/sbin/policy-rc.d added=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 0755 "$policy"
        added=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
        status=$?
    if [ "$added" -eq 1 ]; then
        as_root rm -f "$policy"
    fi
    return "$status"
}
