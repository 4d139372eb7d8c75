#!/usr/bin/env bash
# Install Dovecot's POP3 server for the integration tests (servers/dovecot.py).
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

# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"
apt_install install-dovecot "$PACKAGE"

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
