#!/usr/bin/env bash
# Real-model test set end to end: generates the models of tests/models/make_real_models.py
# (a Silero-VAD-style speech model with If/LSTM and a state carried across calls, PaddleOCR
# detector and recogniser in paddle2onnx's layout, a YOLOv8-style detector from
# torch.onnx.export, a Magika-style byte classifier in tf2onnx's layout; seeded random weights,
# reference outputs from onnxruntime), runs every case with
#   GPUGRID run --local MODEL INPUT... --output-dir DIR
# and compares the outputs with tests/models/compare.py (rtol 1e-3, atol 1e-4). A chained case
# (OUT_DIR/chains.txt) takes its state input from gpugrid's own output of the earlier case, as
# a caller streaming audio does, and is compared with onnxruntime doing the same. Then the bad
# models and inputs (OUT_DIR/bad/expect.txt) must fail with exit 2 and a one-line error.
# The LLM decoders of the set are tested by tests/llm_decoders_test.sh.
#
# Usage: real_models_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with numpy, onnx, onnxruntime and torch).
# Environment: GPUGRID_PYTHON, GPUGRID_REAL_MODELS_DIR (model cache; default BINARY's folder
# /real-models-test when that is a CMake build folder, else /tmp). The models are regenerated
# only when make_real_models.py or the Python packages change.
set -uo pipefail

. "$(dirname "$0")/lib/model_cache.sh"
model_test_env "${1:?usage: real_models_test.sh GPUGRID_BINARY SOURCE_DIR}" "${2:-}"
cached_models real-models-test "${GPUGRID_REAL_MODELS_DIR:-}" "$models/make_real_models.py"

work=$(mktemp -d "${TMPDIR:-/tmp}/gpugrid-real-models.XXXXXX")
trap 'rm -rf "$work"' EXIT

declare -A chain_input=() chain_from=()
while read -r fam k idx prev name; do
  [ -n "$fam" ] || continue
  chain_input[$fam.$k]=$idx
  chain_from[$fam.$k]="$work/$fam.$prev/$name.npy"
done < "$cache/chains.txt"

fail=0
count=0
while read -r fam k model inputs; do
  [ -n "$fam" ] || continue
  out="$work/$fam.$k"
  mkdir -p "$out"
  read -r -a files <<< "$inputs"
  note=""
  if [ -n "${chain_input[$fam.$k]:-}" ]; then
    files[${chain_input[$fam.$k]}]=${chain_from[$fam.$k]}
    note=" (state from case ${chain_from[$fam.$k]#"$work/$fam."})"
  fi
  count=$((count + 1))
  if ! timeout 60 "$bin" run --local --threads 2 "$model" "${files[@]}" --output-dir "$out" >"$out.log" 2>&1; then
    echo "FAIL $fam case $k$note: $(tail -n 2 "$out.log" | tr '\n' ' ')"
    fail=1
    continue
  fi
  if "$py" "$models/compare.py" --manifest "$cache/manifest.json" --family "$fam" --case "$k" \
      --actual-dir "$out" >"$out.cmp" 2>&1; then
    echo "ok   $fam case $k$note"
  else
    echo "FAIL $fam case $k$note:"; cat "$out.cmp"
    fail=1
  fi
done < <("$py" "$models/compare.py" --list "$cache/manifest.json")
if [ $count -eq 0 ]; then
  echo "FAIL: no cases in $cache/manifest.json"
  exit 1
fi

check_refusals "$cache/bad" "$work"

[ $fail -eq 0 ] && echo "real models: all passed" || echo "real models: FAILED"
exit $fail
