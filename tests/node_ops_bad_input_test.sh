#!/usr/bin/env bash
# Bad input to the loss, NMS, Det, signal, text and optimizer ops, and a model with a sequence
# input: `GPUGRID run --local` must exit 2 with a one-line error that names the problem (the
# models come from tests/node_suite/make_bad_models.py).
#
# Usage: node_ops_bad_input_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no Python with numpy and onnx).
set -uo pipefail
bin=${1:?usage: node_ops_bad_input_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck disable=SC1091
source "$src/tests/python_env.sh" "$src"
if [ -z "$PY" ]; then echo "skipped: no Python with numpy and onnx"; exit 77; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gpugrid-badops.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PY" "$src/tests/node_suite/make_bad_models.py" "$work" || { echo "FAIL: make_bad_models.py failed"; exit 1; }
fail=0
n=0
while IFS=$'\t' read -r name expect; do
  [ -n "$name" ] || continue
  n=$((n + 1))
  inputs=()
  for f in "$work/$name"/input_*.npy; do [ -e "$f" ] && inputs+=("$f"); done
  timeout 30 "$bin" run --local --device cpu "$work/$name/model.onnx" "${inputs[@]}" >"$work/$name.out" 2>"$work/$name.err"
  rc=$?
  lines=$(grep -c . "$work/$name.err")
  if [ $rc -ne 2 ]; then
    echo "FAIL $name: exit $rc, expected 2: $(head -c 300 "$work/$name.err")"; fail=1
  elif [ "$lines" -ne 1 ]; then
    echo "FAIL $name: $lines lines on stderr, expected one:"; cat "$work/$name.err"; fail=1
  elif ! grep -qF -- "$expect" "$work/$name.err"; then
    echo "FAIL $name: error does not say '$expect': $(cat "$work/$name.err")"; fail=1
  fi
done < "$work/cases.txt"
[ $fail -eq 0 ] && echo "all $n bad models refused with exit 2 and a one-line error"
exit $fail
