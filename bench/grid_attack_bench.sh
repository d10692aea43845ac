#!/usr/bin/env bash
# The open-network attacks of tests/grid_attack_test.sh and tests/grid_net_test.sh, replayed
# with more rounds, with the figures each prints (peers kept after a 10,000-peer flood, run
# times before and after, connections one identity gets, RSS under announced uploads).
#
#   bench/grid_attack_bench.sh BUILD_DIR [ROUNDS]
#
# BUILD_DIR is a configured CMake build tree with -DGPUGRID_TESTS=ON (for gpugrid-faulty).
set -uo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 BUILD_DIR [ROUNDS]" >&2
  exit 2
fi
build=$1
rounds=${2:-20}
src="$(cd "$(dirname "$0")/.." && pwd)"
cmake --build "$build" --target gpugrid gpugrid-faulty -j "${JOBS:-1}" >/dev/null || exit 1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## attacks ($rounds runs after the flood)"
GPUGRID_ATTACK_ROUNDS=$rounds bash "$src/tests/grid_attack_test.sh" "$build/gpugrid" "$src"
code=$?
echo "## faults (failover, stall, drain, SIGINT drain, liar)"
t0=$(date +%s)
bash "$src/tests/grid_net_test.sh" "$build/gpugrid" "$src"
code2=$?
echo "grid_net_test: exit $code2 in $(($(date +%s) - t0)) s"
[ "$code" -eq 0 ] && [ "$code2" -eq 0 ]
