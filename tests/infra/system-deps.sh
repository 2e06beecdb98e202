#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only those missing: a Docker engine
# (docker.io), debootstrap for the local stand-in base images, Chromium for the docs page,
# wrk for the benchmarks and docker-registry for `kiln push`. Uses the machine's own apt sources.
set -euo pipefail
want=(docker.io debootstrap chromium wrk docker-registry)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "system-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "system-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
