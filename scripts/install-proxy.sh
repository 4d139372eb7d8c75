#!/usr/bin/env bash
# Install the proxy servers for the proxy tests (servers/proxies.py,
# tests/integration/test_proxy.py): Dante (danted, SOCKS5), microsocks
# (SOCKS5 with a user name and password of its own) and tinyproxy (HTTP
# CONNECT), all Debian packages.
#
# Idempotent: installs only the packages whose program is missing. The tests
# run private instances (own configuration, 127.0.0.1, free high ports), so
# the system-wide services the packages bring are never needed; this script
# keeps them from being started, and stops them if the install started them.
set -euo pipefail

# program:package
PROXIES=(danted:dante-server microsocks:microsocks tinyproxy:tinyproxy)

find_program() {
    command -v "$1" 2>/dev/null && return 0
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
        if [ -x "$dir/$1" ]; then
            echo "$dir/$1"
            return 0
        fi
    done
    return 1
}

missing=()
for proxy in "${PROXIES[@]}"; do
    program=${proxy%%:*}
    package=${proxy#*:}
    if existing=$(find_program "$program"); then
        echo "install-proxy: already installed: $existing ($package)"
    else
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"
apt_install install-proxy "${missing[@]}"

# Belt and braces: make sure no system-wide instance is left running.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now danted.service tinyproxy.service >/dev/null 2>&1 || true
fi
for pidfile in /run/danted.pid /run/tinyproxy/tinyproxy.pid; do
    if [ -s "$pidfile" ] && as_root kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        as_root kill "$(cat "$pidfile")" || true
    fi
done

for proxy in "${PROXIES[@]}"; do
    program=${proxy%%:*}
    if ! find_program "$program" >/dev/null; then
        echo "install-proxy: ${proxy#*:} installed but no $program found" >&2
        exit 1
    fi
done
echo "install-proxy: installed ${missing[*]}"
