#!/usr/bin/env bash
# The long version of tests/ledger_reliability_test.sh: more runs sharing one data dir and more
# providers killed with SIGKILL while clients pay them. Prints the figures line; results are
# kept in bench/results/ledger-*.md.
# Usage: bench/ledger_faults.sh path/to/gpugrid path/to/source [parallel_runs] [kill_rounds]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
LEDGER_PARALLEL_RUNS="${3:-8}" LEDGER_KILL_ROUNDS="${4:-20}" \
  exec bash "$here/../tests/ledger_reliability_test.sh" "$1" "$2"
