#!/usr/bin/env bash
# The recurrent ops (LSTM, GRU, RNN), the com.microsoft operators and the node-suite ops whose
# onnx cases are thin (losses with weights, NonMaxSuppression, Det, Shrink) against onnxruntime:
# tests/models/make_op_cases.py builds one-node models with seeded inputs and onnxruntime's
# outputs, each runs through
#   GPUGRID run --local MODEL INPUT... --output-dir DIR
# and tests/models/compare.py checks every output with the case's tolerance.
#
# Usage: op_cases_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 all cases pass; 1 any failure; 77 skipped (no .venv with numpy, onnx and onnxruntime:
# run scripts/python_env.sh).
# Environment:
#   GPUGRID_PYTHON     Python to use (default SOURCE_DIR/.venv/bin/python)
#   GPUGRID_OP_CASES   comma-separated subset of cases (default: all)
set -uo pipefail

bin=${1:?usage: op_cases_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
models="$src/tests/models"
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}

if [ ! -x "$py" ] || ! "$py" -c "import numpy, onnx, onnxruntime" >/dev/null 2>&1; then
  echo "skipped: no Python with numpy, onnx and onnxruntime at $py (run scripts/python_env.sh)"
  exit 77
fi
if [ ! -x "$bin" ] && ! command -v "$bin" >/dev/null 2>&1; then
  echo "FAIL: gpugrid binary $bin not found"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gpugrid-op-cases.XXXXXX")
trap 'rm -rf "$work"' EXIT
args=()
[ -n "${GPUGRID_OP_CASES:-}" ] && args=(--cases "$GPUGRID_OP_CASES")
if ! "$py" "$models/make_op_cases.py" "$work/cases" "${args[@]}" >"$work/gen.log" 2>&1; then
  cat "$work/gen.log"
  echo "FAIL: make_op_cases.py failed"
  exit 1
fi

passed=0
failed=0
while read -r name k model inputs; do
  [ -n "$name" ] || continue
  out="$work/out/$name"
  mkdir -p "$out"
  read -r -a files <<< "$inputs"
  if ! timeout 60 "$bin" run --local "$model" "${files[@]}" --output-dir "$out" >"$out.stdout" 2>"$out.stderr"; then
    echo "FAIL $name: run failed: $(tail -n 3 "$out.stderr" | tr '\n' ' ')"
    failed=$((failed + 1))
    continue
  fi
  if "$py" "$models/compare.py" --manifest "$work/cases/manifest.json" --family "$name" --case "$k" \
      --actual-dir "$out" >"$out.cmp" 2>&1; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name:"
    cat "$out.cmp"
    failed=$((failed + 1))
  fi
done < <("$py" "$models/compare.py" --list "$work/cases/manifest.json")

# Bad input: a MatMulNBits whose blocks do not cover K is one line on stderr and exit 2.
bad="$src/tests/fuzz/corpus/fuzz_model_loader/matmul_nbits_bad_blocks.onnx"
"$py" -c "import numpy as np, sys; np.save(sys.argv[1], np.ones((1, 64), np.float32))" "$work/x64.npy"
"$bin" run --local --device cpu "$bad" "$work/x64.npy" >"$work/bad.out" 2>"$work/bad.err"
rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l < "$work/bad.err")" -eq 1 ] && grep -q "does not hold N=8 columns" "$work/bad.err"; then
  echo "PASS matmul_nbits_bad_blocks (exit 2: $(cat "$work/bad.err"))"
  passed=$((passed + 1))
else
  echo "FAIL matmul_nbits_bad_blocks: exit $rc, stderr: $(cat "$work/bad.err")"
  failed=$((failed + 1))
fi

echo "op cases: $passed passed, $failed failed"
[ $((passed + failed)) -gt 0 ] || { echo "FAIL: no case selected"; exit 1; }
[ $failed -eq 0 ]
