#!/usr/bin/env bash
# Install the peer POP3 downloaders that `python -m benchmarks fetch` compares
# `aiopop fetch` with: mpop, getmail6 and fetchmail (Debian packages).
#
# Idempotent: installs only the packages whose program is missing. None of
# them runs as a service; the benchmark starts each one per run with a
# configuration of its own (see benchmarks/suites/fetch/).
set -euo pipefail

# program:package
PEERS=(mpop:mpop getmail:getmail6 fetchmail:fetchmail)

missing=()
for peer in "${PEERS[@]}"; do
    program=${peer%%:*}
    package=${peer#*:}
    if command -v "$program" >/dev/null 2>&1; then
        echo "install-peers: already installed: $(command -v "$program") ($package)"
    else
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

# fetchmail's package ships a system service: apt_install starts none.
# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"
apt_install install-peers "${missing[@]}"

for peer in "${PEERS[@]}"; do
    program=${peer%%:*}
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "install-peers: ${peer#*:} installed but no $program found" >&2
        exit 1
    fi
done
echo "install-peers: installed ${missing[*]}"
