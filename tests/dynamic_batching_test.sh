#!/usr/bin/env bash
# Dynamic batching on a provider, end to end: an `offer` process with --batch-max 8 gets
# concurrent jobs from `run --batch`; /metrics shows merged executions and the batch-size
# histogram, and every output equals the --local result of its input. With --batch-max 1 the
# same provider merges nothing.
# Usage: tests/dynamic_batching_test.sh path/to/gpugrid path/to/source
# Exit 77 (skipped) when the Python test environment lacks numpy (scripts/python_env.sh).
py=${GPUGRID_PYTHON:-$2/.venv/bin/python}
if ! "$py" -c "import numpy" >/dev/null 2>&1; then
  echo "skipped: $py lacks numpy (run scripts/python_env.sh)"
  exit 77
fi
source "$2/tests/lib/loopback_grid.sh" "$@"

mkdir -p "$tmp/in"
for i in 0 1 2 3 4; do
  for k in $(seq 0 11); do cp "$src/examples/digits/sample_$i.npy" "$tmp/in/s${k}_$i.npy"; done
  "$bin" run --local "$model" "$src/examples/digits/sample_$i.npy" -o "$tmp/want_$i.npy" || { echo "FAIL: --local run" >&2; exit 1; }
done

# check_outputs DIR N: N job folders, each output equal (within 1e-5) to its sample's --local result.
check_outputs() {
  local n
  n=$(ls -d "$1"/*/ 2>/dev/null | wc -l)
  [ "$n" -eq "$2" ] || fail "$1 holds $n finished jobs, not $2"
  "$py" - "$1" "$tmp" <<'PY' || fail "$1: outputs differ from --local"
import glob, os, sys
import numpy as np
bad = 0
for f in glob.glob(os.path.join(sys.argv[1], "*", "logits.npy")):
    sample = os.path.basename(os.path.dirname(f)).rsplit("_", 1)[1]
    want = np.load(os.path.join(sys.argv[2], f"want_{sample}.npy"))
    got = np.load(f)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        print(f, got, want, file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY
}

# ---- 1. batching on: merged executions, results as when run alone
start_provider b --slots 1 --batch-max 8 --batch-wait-us 20000 || exit 1
"$bin" run "$model" --batch "$tmp/in" --output-dir "$tmp/out1" --peer "$url_b" --data-dir "$tmp/c1" --in-flight 8 \
  >/dev/null 2>"$tmp/r1.err"
code=$?
[ "$code" -eq 0 ] || fail "batch over a batching provider exited $code: $(tail -2 "$tmp/r1.err")"
check_outputs "$tmp/out1" 60
merged=$(metric b gpugrid_batched_executions_total)
jobs=$(metric b gpugrid_batched_jobs_total)
[ "${merged:-0}" -ge 1 ] || fail "no merged executions (gpugrid_batched_executions_total=${merged:-none})"
[ "${jobs:-0}" -ge $((2 * ${merged:-1})) ] || fail "merged executions carried ${jobs:-none} jobs"
count=$(metric b gpugrid_batch_size_count)
inf=$(metric b 'gpugrid_batch_size_bucket{le="+Inf"}')
one=$(metric b 'gpugrid_batch_size_bucket{le="1"}')
[ -n "$count" ] && [ "$count" = "$inf" ] || fail "batch-size histogram: count=${count:-none} +Inf=${inf:-none}"
[ "${one:-0}" -lt "${count:-0}" ] || fail "the histogram shows no execution above 1 job (le=1: ${one:-none}, count ${count:-none})"
done_jobs=$(metric b gpugrid_jobs_total)
[ "${done_jobs:-0}" -eq 60 ] || fail "the provider did ${done_jobs:-none} jobs, not 60 (one receipt each)"
echo "merged executions: $merged carrying $jobs of 60 jobs" >&2

# ---- 2. --batch-max 1: nothing merged
start_provider o --slots 1 --batch-max 1 || exit 1
# (two in flight: without batching a one-slot provider takes two jobs at a time, and refuses more)
"$bin" run "$model" --batch "$tmp/in" --output-dir "$tmp/out2" --peer "$url_o" --data-dir "$tmp/c2" --in-flight 2 \
  >/dev/null 2>"$tmp/r2.err" || fail "batch over a non-batching provider: $(tail -2 "$tmp/r2.err")"
check_outputs "$tmp/out2" 60
[ "$(metric o gpugrid_batched_executions_total)" = "0" ] || fail "--batch-max 1 merged executions"

# ---- 3. bad flags
"$bin" offer --batch-max 0 >/dev/null 2>"$tmp/e.err"
[ $? -eq 2 ] || fail "--batch-max 0 was not refused with exit 2"
"$bin" offer --batch-wait-us -5 >/dev/null 2>"$tmp/e.err"
[ $? -eq 2 ] || fail "--batch-wait-us -5 was not refused with exit 2"

[ "$failures" -eq 0 ] || exit 1
echo "ok"
