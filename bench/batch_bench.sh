#!/usr/bin/env bash
# run --batch throughput: N inputs of the bundled digit classifier over 1..P `gpugrid offer`
# providers on loopback (one slot each), against a shell loop of single `gpugrid run --peer`
# calls; each round starts fresh providers. (offer has no --threads flag yet, so on a
# 2-core machine the providers share both cores: scaling past 2 needs a CPU quota per process.)
# Usage: bench/batch_bench.sh path/to/gpugrid [N=10000] [P=4] [LOOP_RUNS=50]
# Environment: IN_FLIGHT_PER_PROVIDER (default 2, the client's own default), OFFER_FLAGS (extra
# flags for every `offer`, e.g. "--batch-max 1" to turn dynamic batching off).
# Prints one JSON line per setup.
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
n=${2:-10000}
pmax=${3:-4}
loop_runs=${4:-50}
src="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
model="$src/examples/digits/digits.onnx"
mkdir -p "$tmp/in"
for k in $(seq 0 $((n - 1))); do ln -s "$src/examples/digits/sample_$((k % 5)).npy" "$tmp/in/x$k.npy"; done
# start_providers P ROUND: starts P providers (the first is everyone's bootstrap); sets urls.
start_providers() {
  urls=()
  for q in $(seq 1 "$1"); do
    local peer=()
    [ ${#urls[@]} -gt 0 ] && peer=(--peer "${urls[0]}")
    "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/r$2p$q" --slots 1 --json ${OFFER_FLAGS:-} "${peer[@]}" >"$tmp/r$2p$q.log" 2>&1 &
    pids+=("$!")
    local url=""
    for _ in $(seq 1 100); do
      url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/r$2p$q.log" | head -1)"
      [ -n "$url" ] && break
      sleep 0.05
    done
    urls+=("$url")
  done
}
stop_providers() {
  local k
  for k in "${pids[@]}"; do kill -9 "$k" 2>/dev/null; wait "$k" 2>/dev/null; done
  pids=()
}
start_providers 1 loop
now() { date +%s.%N; }
t0=$(now)
for k in $(seq 0 $((loop_runs - 1))); do
  "$bin" run "$model" "$tmp/in/x$k.npy" --peer "${urls[0]}" --data-dir "$tmp/loop" -o "$tmp/loop_$k.npy" 2>/dev/null
done
t1=$(now)
loop_rate=$(echo "$loop_runs / ($t1 - $t0)" | bc -l)
printf '{"setup":"shell loop of gpugrid run --peer","jobs":%d,"jobs_per_s":%.1f}\n' "$loop_runs" "$loop_rate"
for p in $(seq 1 "$pmax"); do
  stop_providers
  start_providers "$p" "$p"
  t0=$(now)
  "$bin" run "$model" --batch "$tmp/in" --output-dir "$tmp/out$p" --peer "${urls[0]}" --data-dir "$tmp/c$p" --timeout 2 \
    --in-flight $((${IN_FLIGHT_PER_PROVIDER:-2} * p)) >/dev/null 2>"$tmp/b$p.err" || true
  t1=$(now)
  rate=$(echo "$n / ($t1 - $t0)" | bc -l)
  done_jobs=$(find "$tmp/out$p" -name '*.npy' | wc -l)
  printf '{"setup":"run --batch","providers":%d,"jobs":%d,"done":%d,"seconds":%.2f,"jobs_per_s":%.1f,"vs_loop":%.1f}\n' \
    "$p" "$n" "$done_jobs" "$(echo "$t1 - $t0" | bc -l)" "$rate" "$(echo "$rate / $loop_rate" | bc -l)"
done
