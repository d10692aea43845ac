#!/usr/bin/env bash
# LLM decoder folders as the common tools write them, run by gpugrid's engine against
# onnxruntime: tests/llm/make_decoders.py makes tiny random-weight Llama/Qwen2/Phi-3/GPT-2
# decoders in onnxruntime-genai's model builder layout (GroupQueryAttention, MatMulNBits,
# float16) and optimum's (torch export, merged If decoder), checks each folder itself
# (--check: onnxruntime against a numpy reference; onnxruntime-genai generates from genai
# folders), then tests/llm/compare_decoder.py compares gpugrid's logits and present.* with
# onnxruntime's for a prefill and a decode step.
#
# Usage: llm_decoders_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with numpy, onnx, onnxruntime, tokenizers, torch
# and onnxruntime-genai: run scripts/python_env.sh).
set -uo pipefail

bin=${1:?usage: llm_decoders_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if [ ! -x "$py" ] || ! "$py" -c "import numpy, onnx, onnxruntime, tokenizers, torch, onnxruntime_genai" >/dev/null 2>&1; then
  echo "skipped: no Python with numpy, onnx, onnxruntime, tokenizers, torch and onnxruntime_genai at $py"
  exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gpugrid-llm-decoders.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail=0
#        arch  format  precision  extra
while read -r arch format prec extra; do
  dir="$work/$arch-$format-$prec"
  if ! "$py" "$src/tests/llm/make_decoders.py" --out "$dir" --arch "$arch" --format "$format" --precision "$prec" \
      --size tiny --check $extra >"$work/make.log" 2>&1; then
    cat "$work/make.log"
    echo "FAIL make_decoders.py --arch $arch --format $format --precision $prec $extra"
    fail=1
    continue
  fi
  tol=2e-3
  [ "$prec" = fp16 ] && tol=1e-2
  # int4: onnxruntime (accuracy_level 4) quantizes the activations of every product to int8,
  # gpugrid only those of up to 4 rows (a decode step) and multiplies a prompt in float.
  [ "$prec" = int4 ] && tol=2e-2
  for m in "$dir"/model.onnx "$dir"/decoder_model_merged.onnx; do
    [ -f "$m" ] || continue
    "$py" "$src/tests/llm/compare_decoder.py" "$bin" "$m" --tol "$tol" | sed "s|$work/||" || fail=1
  done
done <<'CASES'
llama genai int4
qwen2 genai fp16
phi3 genai fp32
gpt2 genai int4 --int4-asym
llama optimum fp16 --merged
qwen2 optimum int4 --merged
gpt2 optimum fp32 --merged
CASES
[ $fail = 0 ] && echo "PASS llm decoders" || echo "FAIL llm decoders"
exit $fail
