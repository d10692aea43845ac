#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for SECONDS.
#
#   tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]     (default 60 s; all targets)
#
# Environment: GPUGRID_FUZZ_BUILD (build dir, default <repo>/build-fuzz), JOBS (build jobs,
# default 2), FUZZ_ARGS (extra libFuzzer flags). Each target's corpus grows in
# BUILD/corpus/<target>/ (seeded from tests/fuzz/corpus/<target>/); crashing inputs land in
# BUILD/artifacts/<target>/. Prints executions, exec/s and the outcome per target; exits 1 if
# any target found a crash (or failed to build), else 0.
set -uo pipefail

secs=${1:-60}
shift || true
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${GPUGRID_FUZZ_BUILD:-$src/build-fuzz}
jobs=${JOBS:-2}
case $secs in ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

if ! command -v clang++ >/dev/null 2>&1; then
  echo "run_fuzz.sh: clang++ not found (libFuzzer needs clang)" >&2
  exit 2
fi

if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DGPUGRID_FUZZ=ON -DGPUGRID_TESTS=OFF \
    -DGPUGRID_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.cmake.log" 2>&1 \
    || { cat "$build.cmake.log" >&2; echo "run_fuzz.sh: cmake failed" >&2; exit 1; }
fi

all_targets=(fuzz_npy fuzz_tensor_proto fuzz_model_loader fuzz_frame)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  known=$(ninja -C "$build" -t targets all 2>/dev/null | cut -d: -f1)
  for t in "${all_targets[@]}"; do
    grep -qx "$t" <<<"$known" && targets+=("$t")
  done
fi
echo "building: ${targets[*]}"
ninja -C "$build" -j"$jobs" "${targets[@]}" >"$build/fuzz-build.log" 2>&1 \
  || { tail -50 "$build/fuzz-build.log" >&2; echo "run_fuzz.sh: build failed" >&2; exit 1; }

declare -A max_len=([fuzz_npy]=4096 [fuzz_tensor_proto]=4096 [fuzz_model_loader]=16384 [fuzz_frame]=65536)
# A single allocation above this is reported as a crash: the readers must never trust a size
# field beyond the bytes they were given (inputs are at most max_len bytes).
declare -A malloc_mb=([fuzz_npy]=256 [fuzz_tensor_proto]=256 [fuzz_model_loader]=2048 [fuzz_frame]=256)
summary=()
failed=0
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/$t"
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t/"
  mkdir -p "$corpus" "$artifacts"
  args=(-max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096
        -malloc_limit_mb="${malloc_mb[$t]:-1024}" -max_len="${max_len[$t]:-4096}" -artifact_prefix="$artifacts")
  [ -f "$src/tests/fuzz/$t.dict" ] && args+=(-dict="$src/tests/fuzz/$t.dict")
  seeds=()
  [ -d "$src/tests/fuzz/corpus/$t" ] && seeds+=("$src/tests/fuzz/corpus/$t")
  # fuzz_frame writes its own seeds (a frame and a bare body per message type), so they always
  # match the current schema.
  if [ "$t" = fuzz_frame ]; then
    mkdir -p "$build/seeds/$t"
    GG_FUZZ_WRITE_SEEDS="$build/seeds/$t" "$bin" -runs=0 >/dev/null 2>&1 || true
    seeds+=("$build/seeds/$t")
  fi
  log="$build/$t.log"
  echo "== $t: ${secs}s"
  # shellcheck disable=SC2086
  "$bin" "${args[@]}" ${FUZZ_ARGS:-} "$corpus" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]*[0-9]+' "$log" | awk '{print $2}' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]*[0-9]+' "$log" | awk '{print $2}' | tail -1)
  if [ -z "$execs" ]; then  # a crash ends the run before the final stats
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  fi
  units=$(find "$corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    outcome="no crash"
  else
    outcome="CRASH (rc $rc): $(grep -E '^(==[0-9]+==ERROR|SUMMARY|.*fuzz invariant failed|.*runtime error)' "$log" | head -2 | tr '\n' ' ')"
    outcome+=" artifact: $(ls -t "$artifacts" 2>/dev/null | head -1)"
    failed=1
    tail -40 "$log" >&2
  fi
  line=$(printf '%-20s %10s execs %8s exec/s  corpus %5s  %s' "$t" "${execs:-?}" "${rate:-?}" "$units" "$outcome")
  echo "$line"
  summary+=("$line")
done
echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
