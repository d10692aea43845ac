#!/usr/bin/env bash
# Control flow and sequences end to end: generates the models of
# tests/models/make_control_flow.py (If, Loop, Scan nested and with outer-scope values, early
# exit, dynamic trip counts, scan axes and directions, the sequence ops; reference outputs from
# onnxruntime), runs every case with `GPUGRID run --local` and compares the outputs with
# tests/models/compare.py; then checks that the bad models (negative or huge trip count, a name
# no graph defines, subgraphs nested too deep, an unsupported op in a branch) fail with exit 2
# and a one-line error, and that `inspect` shows the path of nodes to the unsupported op.
#
# Usage: control_flow_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with numpy, onnx and onnxruntime).
set -uo pipefail
. "$(dirname "$0")/lib/model_cache.sh"

bin=${1:?usage: control_flow_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if [ ! -x "$py" ] || ! "$py" -c "import numpy, onnx, onnxruntime" 2>/dev/null; then
  echo "skipped: no Python test environment with numpy, onnx and onnxruntime at $py (run scripts/python_env.sh)"
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gpugrid-cf.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$py" "$src/tests/models/make_control_flow.py" "$work/m" >/dev/null || { echo "FAIL: make_control_flow.py failed"; exit 1; }

fail=0
while read -r fam k model inputs; do
  [ -n "$fam" ] || continue
  out="$work/out/$fam.$k"
  mkdir -p "$out"
  read -r -a files <<< "$inputs"
  if ! timeout 60 "$bin" run --local --threads 2 "$model" "${files[@]}" --output-dir "$out" >"$out.log" 2>&1; then
    echo "FAIL $fam case $k: $(tail -n 2 "$out.log" | tr '\n' ' ')"
    fail=1
    continue
  fi
  if "$py" "$src/tests/models/compare.py" --manifest "$work/m/manifest.json" --family "$fam" --case "$k" \
      --actual-dir "$out" >"$out.cmp" 2>&1; then
    echo "ok   $fam case $k"
  else
    echo "FAIL $fam case $k:"; cat "$out.cmp"
    fail=1
  fi
done < <("$py" "$src/tests/models/compare.py" --list "$work/m/manifest.json")

check_refusals "$work/m/bad" "$work"

# inspect lists the ops inside subgraphs and the path of nodes to an unsupported one.
want="unsupported FooBar at If 'outer' then_branch > If 'inner_if' then_branch > FooBar 'foo'"
if "$bin" inspect "$work/m/bad/unsupported_in_branch.onnx" >"$work/inspect.txt" 2>&1 && grep -qF "$want" "$work/inspect.txt" &&
   grep -qE "^  Neg +2 .*\(2 in subgraphs\)" "$work/inspect.txt"; then
  echo "ok   inspect names the path to an unsupported op"
else
  echo "FAIL inspect: want '$want' and Neg counted in subgraphs:"; cat "$work/inspect.txt"
  fail=1
fi

[ $fail -eq 0 ] && echo "control flow: all passed"
exit $fail
