#!/usr/bin/env bash
# The issue's 100 paid jobs: tests/chain_grid_test.sh with JOBS=100 (deposit -> 100 jobs, each
# with a voucher -> SIGKILL -> redeem at restart -> on-chain amount equals both ledgers, then
# the refusals). Prints the time the 100 paid jobs took.
# Usage: bench/chain_grid_bench.sh build/gpugrid [SOURCE_DIR]
set -euo pipefail
bin=${1:?usage: chain_grid_bench.sh GPUGRID_BINARY [SOURCE_DIR]}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
JOBS=${JOBS:-100} exec bash "$src/tests/chain_grid_test.sh" "$bin" "$src"
