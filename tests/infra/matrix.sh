#!/usr/bin/env bash
# The Python matrix of `make test`: under each supported Python other than the main suite's,
# the runtime's in-process tests and a serve-predict-docs smoke of the installed kiln.
#   bash tests/infra/matrix.sh 3.10 3.12 3.13
# Each Python runs in .venv-VERSION, made by tests/infra/venv.sh (the Makefile keeps it up to
# date). Every Python is run even when one fails; one summary line each, then exit 1 if any
# part of any failed (pytest's exit 5, no test collected, is a failure like any other).
set -uo pipefail
cd "$(dirname "$0")/../.."

# The tests that run in-process or start gunicorn on loopback: no Docker, no Chromium, and
# about 25 s each. The slow and docker ones stay with the main suite's Python.
TESTS=(
  tests/test_auth.py
  tests/test_bounded.py
  tests/test_builder_render.py
  tests/test_capture.py
  tests/test_cli_usage.py
  tests/test_config.py
  tests/test_headers.py
  tests/test_lifecycle.py
  tests/test_loader.py
  tests/test_logs.py
  tests/test_metrics.py
  tests/test_openapi.py
  tests/test_public_api.py
  tests/test_responses.py
  tests/test_scaffold.py
  tests/test_schema_check.py
  tests/test_sigv4.py
  tests/test_validation.py
)

(($#)) || { echo "usage: $0 VERSION..." >&2; exit 2; }

summary=()
failed=0
for version in "$@"; do
  venv=.venv-$version
  python=$venv/bin/python
  if [[ ! -x $python ]]; then
    summary+=("matrix: Python $version: FAILED: no $python (make test-matrix makes it)")
    failed=1
    continue
  fi
  full=$("$python" -c 'import platform; print(platform.python_version())')
  echo "=== matrix: Python $full ($venv)"

  out=$(mktemp)
  "$python" -m pytest -q -p no:cacheprovider -m "not docker and not slow" "${TESTS[@]}" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  # pytest's last line is its count (or why it ran nothing).
  tests=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
  rm -f "$out"
  if ((rc == 0)); then
    tests="ok (${tests:-exit 0})"
  else
    tests="FAILED (pytest exit $rc: ${tests:-see above})"
    failed=1
  fi

  start=$SECONDS
  smoke=$("$python" tests/infra/smoke.py)
  rc=$?
  echo "$smoke"
  smoke=${smoke#"smoke: Python $full: "}
  if ((rc == 0)); then
    smoke=ok
  else
    smoke=${smoke:-"FAILED (exit $rc)"}
    failed=1
  fi
  summary+=("matrix: Python $full: tests $tests; smoke $smoke ($((SECONDS - start)) s)")
done

echo "=== matrix summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
