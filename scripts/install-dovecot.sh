#!/usr/bin/env bash
# Install Dovecot's POP3 server for the integration tests (tests/dovecot.py).
#
# Idempotent: does nothing when a dovecot binary is already there. The tests
# run their own private instance (own config, base_dir and ports), so the
# system-wide service the package brings is never needed; this script keeps
# it from being started, and stops it if the install started it anyway.
set -euo pipefail

PACKAGE=dovecot-pop3d

find_dovecot() {
    command -v dovecot 2>/dev/null && return 0
    if [ -x /usr/sbin/dovecot ]; then
        echo /usr/sbin/dovecot
        return 0
    fi
    return 1
}

if existing=$(find_dovecot); then
    echo "install-dovecot: already installed: $existing ($("$existing" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    echo "install-dovecot: dovecot is not installed, and installing $PACKAGE needs root:" >&2
    echo "install-dovecot: run this script as root, or install sudo." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-dovecot: apt-get not found; install $PACKAGE (Dovecot 2.3) by hand." >&2
    exit 1
fi

# Debian's maintainer scripts start services through invoke-rc.d, which asks
# policy-rc.d first: exit status 101 means "do not start". Put one in place
# for the duration of the install unless the system already has its own.
POLICY=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY" >/dev/null
    as_root chmod 0755 "$POLICY"
    added_policy=1
fi
remove_policy() {
    if [ "$added_policy" -eq 1 ]; then
        as_root rm -f "$POLICY"
    fi
}
trap remove_policy EXIT

export DEBIAN_FRONTEND=noninteractive
as_root env DEBIAN_FRONTEND=noninteractive apt-get update
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$PACKAGE"

# Belt and braces: make sure no system-wide instance is left running.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi
if [ -s /run/dovecot/master.pid ] && as_root kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    as_root /usr/sbin/dovecot stop || true
fi

if ! installed=$(find_dovecot); then
    echo "install-dovecot: $PACKAGE installed but no dovecot binary found" >&2
    exit 1
fi
echo "install-dovecot: installed $installed ($("$installed" --version))"
