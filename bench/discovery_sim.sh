#!/usr/bin/env bash
# Discovery at scale: the real DHT code (discovery/) for 1,000 and 10,000 nodes in one process
# over a simulated network (per-node access delay 5-60 ms, 1% loss, churn), by
# bench/discovery_sim.cc. Prints one JSON line per configuration.
#
#   bench/discovery_sim.sh BUILD_DIR [OUT_DIR]
#
# SIZES (default "1000 10000"), MEASURE_MIN (default 10), WARMUP_MIN (default 10) and CHURN
# (share of nodes replaced per minute, default 0.01) change the runs. The 10,000-node run takes
# a few minutes of one core.
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 BUILD_DIR [OUT_DIR]" >&2
  exit 2
fi
build=$1
out=${2:-$build/discovery_sim}
mkdir -p "$out"
cmake --build "$build" --target discovery_sim -j "${JOBS:-1}" >/dev/null
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores" >&2
for n in ${SIZES:-1000 10000}; do
  for churn in ${CHURN:-0.01}; do
    "$build/bench/discovery_sim" --nodes "$n" --warmup-min "${WARMUP_MIN:-10}" --measure-min "${MEASURE_MIN:-10}" \
      --churn "$churn" --loss 0.01 --lookups-per-sec 5 --json 2>"$out/progress-$n-$churn.log" | tee "$out/sim-$n-$churn.json"
  done
done
