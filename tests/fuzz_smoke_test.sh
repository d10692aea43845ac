#!/usr/bin/env bash
# A short, bounded run of the libFuzzer targets for CI: each target that is built runs for
# FUZZ_SMOKE_SECONDS (default 8) on the committed seeds, at most about 40 s in all. It builds
# nothing: the fuzz targets come from a clang build with -DGPUGRID_FUZZ=ON, either this build
# tree (tests/fuzz/ beside the binary under test) or GPUGRID_FUZZ_BUILD. Without one the test
# is skipped (exit 77). Long runs: tests/fuzz/run_fuzz.sh.
# Args (from tests/CMakeLists.txt): $1 = the gpugrid binary, $2 = the source dir.
set -uo pipefail
src=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
secs=${FUZZ_SMOKE_SECONDS:-8}

fuzz_dir=
if [ -n "${GPUGRID_FUZZ_BUILD:-}" ]; then
  fuzz_dir=$GPUGRID_FUZZ_BUILD/tests/fuzz
elif [ -n "${1:-}" ] && [ -e "$1" ]; then
  fuzz_dir=$(cd "$(dirname "$1")" && pwd)/tests/fuzz
fi
targets=()
for t in fuzz_npy fuzz_tensor_proto fuzz_model_loader fuzz_frame; do
  [ -n "$fuzz_dir" ] && [ -x "$fuzz_dir/$t" ] && targets+=("$t")
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "skipped: no fuzz build (configure a clang build with -DGPUGRID_FUZZ=ON, or set GPUGRID_FUZZ_BUILD)"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$work/seeds-$t"
  seeds=("$work/seeds-$t")  # an empty dir keeps libFuzzer's corpus arguments valid
  [ -d "$src/tests/fuzz/corpus/$t" ] && seeds+=("$src/tests/fuzz/corpus/$t")
  if [ "$t" = fuzz_frame ]; then
    GG_FUZZ_WRITE_SEEDS="$work/seeds-$t" "$fuzz_dir/$t" -runs=0 >/dev/null 2>&1 || true
  fi
  dict=()
  [ -f "$src/tests/fuzz/$t.dict" ] && dict=(-dict="$src/tests/fuzz/$t.dict")
  # New units go to a scratch dir (the first corpus dir); crashing inputs stay in the fuzz
  # build dir so that they can be replayed: "$fuzz_dir/$t" "$fuzz_dir/smoke-crash-...".
  "$fuzz_dir/$t" -max_total_time="$secs" -seed=1 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len=16384 -print_final_stats=1 -artifact_prefix="$fuzz_dir/smoke-" "${dict[@]}" \
    "$work/$t" "${seeds[@]}" >"$work/$t.log" 2>&1
  rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]*[0-9]+' "$work/$t.log" | awk '{print $2}')
  if [ $rc -ne 0 ]; then
    echo "FAIL $t (rc $rc)"
    tail -30 "$work/$t.log"
    failed=1
  else
    echo "ok   $t: ${execs:-?} executions in ${secs}s"
  fi
done
exit $failed
