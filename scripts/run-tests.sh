#!/usr/bin/env bash
# `make test`: the whole suite in two runs. The quick tests run one at a time (several start
# real servers and share Redis/PostgreSQL); the slow quality tests are independent CPU-bound
# trainings, so they run two at a time (pytest-xdist), one thread each, on the two CI cores.
# With arguments, pytest runs once with exactly those (e.g. one file, `-m slow -n 2`).
# pytest's exit status 5 (no tests collected) is a failure, not a pass.
# GAN_REQUIRE_SERVICES=1: a test that needs Redis or PostgreSQL (shared, or the binaries of a
# private one) and does not find it FAILS with the reason instead of skipping
# (tests/conftest.py, service_missing), so that a pass means every integration test ran.
# A plain `pytest` in a clone without the servers still skips them.
set -uo pipefail
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
export GAN_REQUIRE_SERVICES=1

run() {
  "$PY" -m pytest -ra "$@"
  local rc=$?
  if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi
  return $rc
}

if [ $# -gt 0 ]; then
  run "$@"
  exit $?
fi
run -m "not slow"; quick=$?
run -m slow -n 2; slow=$?
echo "quick tests: exit $quick; slow quality tests: exit $slow"
[ $quick -eq 0 ] && [ $slow -eq 0 ]
