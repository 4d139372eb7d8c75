#!/usr/bin/env bash
# Install the peer POP3 downloaders that `python -m benchmarks.fetch` compares
# `aiopop fetch` with: mpop, getmail6 and fetchmail (Debian packages).
#
# Idempotent: installs only the packages whose program is missing. None of
# them runs as a service; the benchmark starts each one per run with a
# configuration of its own (see benchmarks/fetch.py).
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

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    echo "install-peers: installing ${missing[*]} needs root: run as root, or install sudo." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: apt-get not found; install ${missing[*]} by hand." >&2
    exit 1
fi

# fetchmail's package ships a system service: keep the maintainer scripts from
# starting anything (policy-rc.d exit 101 = "do not start"), as install-dovecot.sh does.
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

as_root env DEBIAN_FRONTEND=noninteractive apt-get update
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

for peer in "${PEERS[@]}"; do
    program=${peer%%:*}
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "install-peers: ${peer#*:} installed but no $program found" >&2
        exit 1
    fi
done
echo "install-peers: installed ${missing[*]}"
