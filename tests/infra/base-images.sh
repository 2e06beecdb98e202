#!/usr/bin/env bash
# Build the local stand-in base images the docker tests use, so that no registry is needed:
#   kiln-standin/python:3.11-slim  Debian bookworm with python3, venv and pip, shaped like
#                                  python:3.11-slim (`python`, `pip` on PATH, no
#                                  EXTERNALLY-MANAGED marker)
#   kiln-standin/bare:bookworm     the same rootfs without Python, for the gpu template
# One debootstrap makes both: the python rootfs is tarred, then Python is purged offline and
# the bare rootfs is tarred. The tarballs stay in ~/.cache/kiln, so a new engine (or a pruned
# one) only needs `docker import`. Images whose tag already exists are left alone.
# The Debian mirror is read from this machine's apt sources, never hard-coded.
set -euo pipefail

PYTHON_TAG=${KILN_STANDIN_PYTHON:-kiln-standin/python:3.11-slim}
BARE_TAG=${KILN_STANDIN_BARE:-kiln-standin/bare:bookworm}
SUITE=bookworm
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kiln
PYTHON_TAR=$CACHE/standin-$SUITE-python.tar.gz
BARE_TAR=$CACHE/standin-$SUITE-bare.tar.gz
DOCKER=${DOCKER:-docker}

log() { echo "base-images: $*" >&2; }

have_image() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

# The first non-security URI that serves $SUITE, from deb822 *.sources or one-line *.list files.
apt_mirror() {
  local files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  local f
  for f in "${files[@]}"; do
    [[ -f $f ]] || continue
    if [[ $f == *.sources ]]; then
      # deb822: stanzas separated by blank lines; take URIs of a stanza whose Suites has $SUITE.
      awk -v suite="$SUITE" '
        function flush() { if (uri != "" && has) { print uri; found = 1; exit } uri = ""; has = 0 }
        /^[[:space:]]*$/ { flush(); next }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
        END { if (!found) flush() }' "$f"
    else
      awk -v suite="$SUITE" '$1 == "deb" {
          n = 2; if ($2 ~ /^\[/) { while ($n !~ /\]$/) n++; n++ }
          if ($(n + 1) == suite) { print $n; exit } }' "$f"
    fi
  done | grep -v -- '-security' | head -n 1
}

build_rootfs() {
  local mirror root
  mirror=$(apt_mirror)
  [[ -n $mirror ]] || { log "no apt source for '$SUITE' in /etc/apt; cannot debootstrap"; exit 1; }
  command -v debootstrap >/dev/null || { log "debootstrap is missing (run tests/infra/system-deps.sh)"; exit 1; }
  root=$(mktemp -d /var/tmp/kiln-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap $SUITE from $mirror (a few minutes, once)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Shape it like python:3.11-slim: `python` and `pip` on PATH, pip may install system-wide.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  [[ -e $root/usr/bin/python ]] || ln -s python3 "$root/usr/bin/python"
  [[ -e $root/usr/bin/pip ]] || ln -s pip3 "$root/usr/bin/pip"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  mkdir -p "$CACHE"
  tar -C "$root" --numeric-owner -cf - . | gzip -1 >"$PYTHON_TAR.tmp" && mv "$PYTHON_TAR.tmp" "$PYTHON_TAR"
  # The bare image: the same rootfs with Python purged (offline: dpkg only removes files).
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove \
    python3 python3-minimal 'python3.*' 'libpython3*' >"$CACHE/purge.log" 2>&1 \
    || { tail -n 30 "$CACHE/purge.log" >&2; exit 1; }
  rm -f "$root/usr/bin/python" "$root/usr/bin/pip"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  tar -C "$root" --numeric-owner -cf - . | gzip -1 >"$BARE_TAR.tmp" && mv "$BARE_TAR.tmp" "$BARE_TAR"
  rm -rf "$root"
  trap - EXIT
}

main() {
  if have_image "$PYTHON_TAG" && have_image "$BARE_TAG"; then
    exit 0
  fi
  mkdir -p "$CACHE"
  if [[ ! -f $PYTHON_TAR || ! -f $BARE_TAR ]]; then
    build_rootfs
  fi
  local path='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  if ! have_image "$PYTHON_TAG"; then
    log "importing $PYTHON_TAG"
    $DOCKER import --change "ENV $path" --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' "$PYTHON_TAR" "$PYTHON_TAG" >/dev/null
  fi
  if ! have_image "$BARE_TAG"; then
    log "importing $BARE_TAG"
    $DOCKER import --change "ENV $path" --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["bash"]' "$BARE_TAR" "$BARE_TAG" >/dev/null
  fi
}

main "$@"
