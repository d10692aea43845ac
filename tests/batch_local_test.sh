#!/usr/bin/env bash
# `run --batch --local --in-flight 4` on a model large enough for the engine's threads to split
# its loops (bench/make_mlp.py, 18 MFLOP): every job of the same input gets the same output,
# bit for bit, as a batch one at a time does. (Runs at once on one shared session used to mix
# up each other's loops.)
# Usage: tests/batch_local_test.sh path/to/gpugrid path/to/source
py=${GPUGRID_PYTHON:-$2/.venv/bin/python}
if ! "$py" -c "import onnx, numpy" >/dev/null 2>&1; then
  echo "skipped: $py lacks onnx or numpy (run scripts/python_env.sh)"
  exit 77
fi
source "$2/tests/lib/loopback_grid.sh" "$@"
"$py" "$src/bench/make_mlp.py" "$tmp/mlp" 2048 3 >/dev/null || { fail "bench/make_mlp.py failed"; exit 1; }
mkdir -p "$tmp/in" "$tmp/one"
for k in $(seq 0 199); do ln -s "$tmp/mlp/mlp_input.npy" "$tmp/in/x$k.npy"; done
ln -s "$tmp/mlp/mlp_input.npy" "$tmp/one/x.npy"
"$bin" run "$tmp/mlp/mlp.onnx" --batch "$tmp/one" --output-dir "$tmp/want" --local --threads 2 2>/dev/null ||
  fail "a batch of one job failed"
"$bin" run "$tmp/mlp/mlp.onnx" --batch "$tmp/in" --output-dir "$tmp/out" --local --threads 2 --in-flight 4 2>"$tmp/b.err" ||
  fail "the batch failed: $(tail -1 "$tmp/b.err")"
same=0 differ=0
for f in "$tmp"/out/*/y.npy; do
  if cmp -s "$f" "$tmp/want/x/y.npy"; then same=$((same + 1)); else differ=$((differ + 1)); fi
done
[ "$same" -eq 200 ] || fail "$differ of 200 jobs of one input gave another output than the job run alone"
[ "$failures" -eq 0 ] || exit 1
echo "batch_local_test: all checks passed (200 jobs, 4 at once, one output)"
