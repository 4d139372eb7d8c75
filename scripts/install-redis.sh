#!/usr/bin/env bash
# Install Redis for the scale-out test (servers/redis_server.py, examples/scale_out/).
#
# Idempotent: does nothing when a redis-server binary is already there. The
# test runs its own private instance (own directory, 127.0.0.1, a free high
# port, no persistence), so the system-wide service the package brings is
# never needed; this script keeps it from being started, and stops it if the
# install started it anyway.
set -euo pipefail

PACKAGE=redis-server

find_redis() {
    command -v redis-server 2>/dev/null && return 0
    for candidate in /usr/bin/redis-server /usr/local/bin/redis-server; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if existing=$(find_redis); then
    echo "install-redis: already installed: $existing ($("$existing" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"
apt_install install-redis "$PACKAGE"

# Belt and braces: make sure no system-wide instance is left running.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now redis-server.service >/dev/null 2>&1 || true
fi
if [ -s /run/redis/redis-server.pid ] && as_root kill -0 "$(cat /run/redis/redis-server.pid)" 2>/dev/null; then
    as_root kill "$(cat /run/redis/redis-server.pid)" || true
fi

if ! installed=$(find_redis); then
    echo "install-redis: $PACKAGE installed but no redis-server binary found" >&2
    exit 1
fi
echo "install-redis: installed $installed ($("$installed" --version))"
