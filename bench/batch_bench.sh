#!/usr/bin/env bash
# run --batch throughput: N inputs over 1..P `gpugrid offer` providers on loopback (one slot
# each), against a shell loop of single `gpugrid run --peer` calls; each setup starts fresh
# providers. Rounds alternate the setups (loop, 1, 2, ..., P providers) so that a noisy machine
# hits all of them alike; report the best round of each.
# Usage: bench/batch_bench.sh path/to/gpugrid [N=10000] [P=4] [LOOP_RUNS=50]
# Environment:
#   MODEL, INPUT        the model and the one input every job uses (default: the bundled digit
#                       classifier and its sample_K.npy, K = job % 5); bench/make_mlp.py writes
#                       a heavier one
#   CPU_QUOTA           percent of one core each provider may use (a cgroup per provider: cgroup
#                       v1's cpu controller or v2's cpu.max; needs root); unset: no limit
#   ROUNDS              alternating rounds (default 1)
#   IN_FLIGHT_PER_PROVIDER (unset: the client's own default, what each provider takes up to 8
#                       per provider), OFFER_FLAGS (extra flags for
#                       every `offer`, e.g. "--batch-max 1" to turn dynamic batching off)
#   WORK_DIR            where the inputs, outputs and data dirs go (default: a folder under
#                       TMPDIR); /dev/shm leaves the file system's cost out
# Prints one JSON line per setup and round.
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
n=${2:-10000}
pmax=${3:-4}
loop_runs=${4:-50}
rounds=${ROUNDS:-1}
src="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d ${WORK_DIR:+-p "$WORK_DIR"})"
pids=()
cgroups=()
cleanup() {
  local p c
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for c in "${cgroups[@]}"; do rmdir "$c" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
model="${MODEL:-$src/examples/digits/digits.onnx}"
mkdir -p "$tmp/in"
for k in $(seq 0 $((n - 1))); do ln -s "${INPUT:-$src/examples/digits/sample_$((k % 5)).npy}" "$tmp/in/x$k.npy"; done

# limit PID NAME: puts process PID in a cgroup of its own capped at CPU_QUOTA percent of a core.
cg_root=""
if [ -n "${CPU_QUOTA:-}" ]; then
  if [ -w /sys/fs/cgroup/cpu ] && [ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then cg_root=/sys/fs/cgroup/cpu
  elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then cg_root=/sys/fs/cgroup
  else echo "batch_bench: cannot make CPU-limited cgroups here (no writable cgroup cpu controller); running without CPU_QUOTA" >&2
  fi
fi
limit() {
  [ -n "$cg_root" ] || return 0
  local cg="$cg_root/ggbench-$$-$2"
  mkdir -p "$cg" || return 1
  cgroups+=("$cg")
  if [ -e "$cg/cpu.cfs_quota_us" ]; then
    echo 100000 >"$cg/cpu.cfs_period_us"
    echo $((CPU_QUOTA * 1000)) >"$cg/cpu.cfs_quota_us"
  else
    echo "$((CPU_QUOTA * 1000)) 100000" >"$cg/cpu.max"
  fi
  echo "$1" >"$cg/cgroup.procs"
}
# start_providers P TAG: starts P providers (the first is everyone's bootstrap); sets urls.
start_providers() {
  urls=()
  for q in $(seq 1 "$1"); do
    local peer=()
    [ ${#urls[@]} -gt 0 ] && peer=(--peer "${urls[0]}")
    "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/$2p$q" --slots 1 --json ${OFFER_FLAGS:-} "${peer[@]}" >"$tmp/$2p$q.log" 2>&1 &
    pids+=("$!")
    limit "$!" "$2p$q"
    local url=""
    for _ in $(seq 1 200); do
      url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/$2p$q.log" | head -1)"
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
now() { date +%s.%N; }
for r in $(seq 1 "$rounds"); do
  if [ "$loop_runs" -gt 0 ]; then
    stop_providers
    start_providers 1 "r${r}loop"
    # The model is sent to the provider once, as in the batch setups.
    "$bin" run "$model" "$tmp/in/x0.npy" --peer "${urls[0]}" --data-dir "$tmp/loop" -o "$tmp/warm.npy" 2>/dev/null
    t0=$(now)
    for k in $(seq 0 $((loop_runs - 1))); do
      "$bin" run "$model" "$tmp/in/x$k.npy" --peer "${urls[0]}" --data-dir "$tmp/loop" -o "$tmp/loop_$k.npy" 2>/dev/null
    done
    t1=$(now)
    loop_rate=$(echo "$loop_runs / ($t1 - $t0)" | bc -l)
    printf '{"round":%d,"setup":"shell loop of gpugrid run --peer","jobs":%d,"jobs_per_s":%.1f}\n' "$r" "$loop_runs" "$loop_rate"
  fi
  for p in $(seq 1 "$pmax"); do
    stop_providers
    start_providers "$p" "r${r}n$p"
    t0=$(now)
    "$bin" run "$model" --batch "$tmp/in" --output-dir "$tmp/out$r-$p" --peer "${urls[0]}" --data-dir "$tmp/c$r-$p" --timeout 5 \
      ${IN_FLIGHT_PER_PROVIDER:+--in-flight $((IN_FLIGHT_PER_PROVIDER * p))} >/dev/null 2>"$tmp/b$p.err" || true
    t1=$(now)
    rate=$(echo "$n / ($t1 - $t0)" | bc -l)
    done_jobs=$(find "$tmp/out$r-$p" -name '*.npy' | wc -l)
    if [ "$done_jobs" -ne "$n" ]; then
      echo "batch_bench: $p providers: $(tail -1 "$tmp/b$p.err")" >&2
      cut -f2 "$tmp/out$r-$p/failures.tsv" 2>/dev/null | sort | uniq -c | sort -rn | head -3 >&2
      [ -n "${KEEP_FAILED:-}" ] && cp -r "$tmp/c$r-$p" "$KEEP_FAILED-$r-$p"
    fi
    vs=""
    [ "$loop_runs" -gt 0 ] && vs=$(printf ',"vs_loop":%.1f' "$(echo "$rate / $loop_rate" | bc -l)")
    printf '{"round":%d,"setup":"run --batch","providers":%d,"jobs":%d,"done":%d,"seconds":%.2f,"jobs_per_s":%.1f%s}\n' \
      "$r" "$p" "$n" "$done_jobs" "$(echo "$t1 - $t0" | bc -l)" "$rate" "$vs"
    # Kept until the end: on ext4 without a journal, creating files soon after deleting many
    # is slower (the allocator skips recently deleted inodes), which would tax the next setup.
  done
done
