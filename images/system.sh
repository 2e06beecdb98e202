#!/bin/sh
# Runs once in the `system` stage of every kiln image: usage `system.sh PYTHON [APT_PACKAGE...]`.
# - makes /usr/local/bin/kiln-python the base image's Python PYTHON (python3.11, say), and
#   installs it with apt (Debian/Ubuntu bases) when the base has none, with venv support;
# - installs service.yaml `system_packages` with apt in the same layer;
# - adds the non-root user `kiln` (uid 10001, group 0) and /srv/service, group-owned by 0 with
#   group permissions equal to the owner's, so an arbitrary UID in group 0 (OpenShift) works.
set -eu
PY="$1"
shift

has_python() {
  # The interpreter is there and makes a venv with pip (Debian ships ensurepip's wheels apart).
  command -v "$1" >/dev/null 2>&1 && "$1" -m venv /tmp/kiln-venv-probe >/dev/null 2>&1 \
    && rm -rf /tmp/kiln-venv-probe
}

apt_update() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "kiln: this base image has no Python $PY and no apt-get to install it or system_packages" \
      "(use a Debian or Ubuntu base, or one with python$PY)" >&2
    exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
}

apt_install() {
  apt_update
  apt-get install -y -qq --no-install-recommends "$@"
}

export DEBIAN_FRONTEND=noninteractive
packages="$*"
python=""
if has_python "python$PY"; then
  python=$(command -v "python$PY")
elif [ "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PY" ] \
    && has_python python3; then
  python=$(command -v python3)
else
  apt_update
  if apt-cache show "python$PY-venv" >/dev/null 2>&1; then
    apt_install "python$PY" "python$PY-venv" ca-certificates $packages
    python=$(command -v "python$PY")
  else
    echo "kiln: python$PY is not packaged for this base; installing its python3 instead" >&2
    apt_install python3 python3-venv ca-certificates $packages
    python=$(command -v python3)
  fi
  packages=""
fi
if [ -n "$packages" ]; then
  apt_install $packages
fi
if [ -n "${APT_UPDATED:-}" ]; then
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi
# The real file: a venv made through a symlink in another folder looks for its stdlib there.
ln -sf "$(readlink -f "$python")" /usr/local/bin/kiln-python
echo "kiln: Python for the service: $python ($("$python" -V 2>&1))"

if ! grep -q '^kiln:' /etc/passwd; then
  echo 'kiln:x:10001:0:kiln service:/srv/service:/usr/sbin/nologin' >>/etc/passwd
fi
mkdir -p /srv/service
chgrp 0 /srv/service
chmod 775 /srv/service
