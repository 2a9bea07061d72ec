#!/usr/bin/env bash
# Runs the linter, the formatter check and the whole test suite (after `make setup system-deps`). pytest's exit 5 (nothing collected) fails too.
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_USE_LEGACY_KERAS=1 SM_FRAMEWORK=tf.keras TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1
.venv/bin/pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
