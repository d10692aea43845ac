#!/usr/bin/env bash
# End-to-end test of the engine on whole models: generates the model families of
# tests/models/make_families.py (test size: MLP, ResNet-18, MobileNetV2, MobileNetV3-small,
# SqueezeNet, ShuffleNetV2, EfficientNet-style, U-Net, BERT-style encoder, GPT-2-style decoder;
# seeded random weights, reference outputs from onnxruntime), runs each case with
#   GPUGRID run --local MODEL INPUT... --output-dir DIR
# and compares every output with tests/models/compare.py (rtol 1e-3, atol 1e-4).
#
# Usage: families_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 all families pass; 1 any failure; 77 skipped (no .venv with torch, onnx and
# onnxruntime: run scripts/python_env.sh) -- ctest's SKIP_RETURN_CODE 77 reports that as skipped.
# Environment:
#   GPUGRID_PYTHON          Python to use (default SOURCE_DIR/.venv/bin/python)
#   GPUGRID_FAMILIES        comma-separated subset of families (default: all)
#   GPUGRID_FAMILIES_DIR    where the generated models are cached (default: BINARY's folder
#                           /families-test when that is a CMake build folder, else /tmp)
#   GPUGRID_FAMILIES_ARGS   extra arguments for `run`, e.g. "--device cpu --threads 2"
#   GPUGRID_FAMILIES_TIMEOUT seconds allowed for one run (default 300)
# The models are regenerated only when make_families.py or the Python packages change.
set -uo pipefail

bin=${1:?usage: families_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
models="$src/tests/models"
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}

if [ ! -x "$py" ]; then
  echo "skipped: no Python test environment at $py (run scripts/python_env.sh)"
  exit 77
fi
versions=$("$py" -c "import numpy, onnx, onnxruntime, torch; print('torch', torch.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)" 2>/dev/null)
if [ -z "$versions" ]; then
  echo "skipped: $py lacks one of numpy, onnx, onnxruntime, torch (run scripts/python_env.sh; torch is Debian's python3-torch)"
  exit 77
fi
if [ ! -x "$bin" ] && ! command -v "$bin" >/dev/null 2>&1; then
  echo "FAIL: gpugrid binary $bin not found"
  exit 1
fi

if [ -n "${GPUGRID_FAMILIES_DIR:-}" ]; then
  cache=$GPUGRID_FAMILIES_DIR
elif [ -f "$(dirname "$bin")/CMakeCache.txt" ]; then
  cache="$(cd "$(dirname "$bin")" && pwd)/families-test"
else
  cache="${TMPDIR:-/tmp}/gpugrid-families-test-$(id -u)"
fi
hash=$({ cat "$models/make_families.py"; echo "$versions"; } | sha256sum | cut -d' ' -f1)

if [ -f "$cache/manifest.json" ] && [ "$(cat "$cache/.stamp" 2>/dev/null)" = "$hash" ]; then
  echo "families: using cached models in $cache ($versions)"
else
  echo "families: generating test-size models into $cache ($versions)"
  mkdir -p "$(dirname "$cache")"
  tmp="$cache.tmp.$$"
  rm -rf "$tmp"
  if ! "$py" "$models/make_families.py" "$tmp" --size test; then
    rm -rf "$tmp"
    echo "FAIL: make_families.py failed"
    exit 1
  fi
  echo "$hash" > "$tmp/.stamp"
  rm -rf "$cache"
  mv "$tmp" "$cache"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gpugrid-families.XXXXXX")
trap 'rm -rf "$work"' EXIT

cases=$("$py" "$models/compare.py" --list "$cache/manifest.json") || { echo "FAIL: cannot read $cache/manifest.json"; exit 1; }
declare -A fam_status=()
order=()
read -r -a extra <<< "${GPUGRID_FAMILIES_ARGS:-}"
while read -r fam k model inputs; do
  [ -n "$fam" ] || continue
  if [ -n "${GPUGRID_FAMILIES:-}" ] && [[ ",$GPUGRID_FAMILIES," != *",$fam,"* ]]; then continue; fi
  [ -n "${fam_status[$fam]:-}" ] || { order+=("$fam"); fam_status[$fam]=PASS; }
  out="$work/$fam.$k"
  mkdir -p "$out"
  read -r -a files <<< "$inputs"
  echo "--- $fam case $k: run --local $(basename "$(dirname "$model")")/model.onnx ${#files[@]} input(s)"
  start=$EPOCHREALTIME
  timeout "${GPUGRID_FAMILIES_TIMEOUT:-300}" "$bin" run --local "$model" "${files[@]}" --output-dir "$out" "${extra[@]}" \
    >"$work/$fam.$k.stdout" 2>"$work/$fam.$k.stderr"
  rc=$?
  secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  if [ $rc -ne 0 ]; then
    echo "  run failed (exit $rc after ${secs}s): $(tail -n 3 "$work/$fam.$k.stderr" | tr '\n' ' ')"
    fam_status[$fam]=FAIL
    continue
  fi
  if ! "$py" "$models/compare.py" --manifest "$cache/manifest.json" --family "$fam" --case "$k" --actual-dir "$out"; then
    fam_status[$fam]=FAIL
  fi
  echo "  (${secs}s)"
done <<< "$cases"

passed=0
failed=0
echo
for fam in "${order[@]}"; do
  echo "${fam_status[$fam]} $fam"
  if [ "${fam_status[$fam]}" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "families: $passed passed, $failed failed"
if [ $((passed + failed)) -eq 0 ]; then
  echo "FAIL: no family selected (GPUGRID_FAMILIES=${GPUGRID_FAMILIES:-})"
  exit 1
fi
[ $failed -eq 0 ]
