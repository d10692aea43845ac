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

. "$(dirname "$0")/lib/model_cache.sh"
model_test_env "${1:?usage: families_test.sh GPUGRID_BINARY SOURCE_DIR}" "${2:-}"
cached_models families-test "${GPUGRID_FAMILIES_DIR:-}" "$models/make_families.py" --size test

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
