#!/usr/bin/env bash
# Make or refresh a virtual environment with one Python and kiln installed into it non-editable,
# as a user's `pip install .` does, with an extra of tests (EXTRA, default test):
#   bash tests/infra/venv.sh 3.12 .venv-3.12 matrix
#   KILN_WHEEL=build/matrix-wheel/kiln-0.1.0-py3-none-any.whl bash tests/infra/venv.sh ...
# The interpreter is pyenv's newest 3.12.x, else python3.12 on PATH; none is an error, since a
# supported Python is one that `make test` runs. pip's output goes to DIR/install.log and is
# shown only when the install fails.
set -euo pipefail
version=$1 dir=$2 extra=${3:-test}

log() { echo "venv: $*" >&2; }

is_version() { "$1" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$version')" 2>/dev/null; }

find_python() {
  local root=${PYENV_ROOT:-$HOME/.pyenv} candidate
  for candidate in $(ls -d "$root/versions/$version".*/bin/python 2>/dev/null | sort -V -r) \
                   "$(command -v "python$version" || true)"; do
    if [[ -n $candidate ]] && is_version "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [[ ! -x $dir/bin/python ]] || ! is_version "$dir/bin/python"; then
  python=$(find_python) || {
    log "no Python $version: neither ${PYENV_ROOT:-$HOME/.pyenv}/versions/$version.* nor python$version on PATH (install it, or leave it out of MATRIX_PYTHONS)"
    exit 1
  }
  rm -rf "$dir"
  "$python" -m venv "$dir"
fi

pip() {
  "$dir/bin/python" -m pip "$@" >>"$dir/install.log" 2>&1 || {
    tail -n 40 "$dir/install.log" >&2
    log "pip $* failed under $dir (whole log: $dir/install.log)"
    exit 1
  }
}

: >"$dir/install.log"
pip install --upgrade pip
# KILN_WHEEL: a wheel of this checkout built once (the Makefile's matrix), else the folder.
pip install "${KILN_WHEEL:-.}[$extra]"
