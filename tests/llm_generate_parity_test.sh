#!/usr/bin/env bash
# Greedy generation parity on decoder folders in the layouts the common tools write
# (tests/llm/make_decoders.py, random weights): `gpugrid generate --local --json` gives the same
# token ids as onnxruntime-genai for model-builder folders (Llama fp32 with rotary inside
# GroupQueryAttention, Qwen2 fp16 with RotaryEmbedding nodes and position_ids, Phi-3 int4 with
# MatMulNBits, GPT-2) and as a plain onnxruntime loop for optimum folders (Llama merged decoder
# with If, Qwen2), and a batch of the prompts gives each its ids alone.
#
# Usage: llm_generate_parity_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with onnxruntime-genai: run scripts/python_env.sh).
# Environment: GPUGRID_PYTHON  Python to use (default SOURCE_DIR/.venv/bin/python)
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: llm_generate_parity_test.sh GPUGRID_BINARY SOURCE_DIR" >&2; exit 2; }
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "${2:-$(dirname "$0")/..}" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if [ ! -x "$py" ] || ! "$py" -c "import onnxruntime, onnxruntime_genai, tokenizers" >/dev/null 2>&1; then
  echo "skipped: no Python with onnxruntime, onnxruntime-genai and tokenizers at $py (run scripts/python_env.sh)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
N=20
prompts=("Hello world, how are you" "The quick brown fox jumps" "1 2 3 4")
for spec in "llama genai fp32" "qwen2 genai fp16" "phi3 genai int4" "gpt2 genai fp32" "llama optimum fp32 --merged" \
            "qwen2 optimum fp32"; do
  set -- $spec
  dir="$work/$1_$2_$3"
  "$py" "$src/tests/llm/make_decoders.py" --out "$dir" --arch "$1" --format "$2" --precision "$3" ${4:-} >/dev/null ||
    { echo "FAIL: make_decoders.py $spec"; fails=$((fails + 1)); continue; }
  ids=$("$py" - "$dir/tokenizer.json" "${prompts[@]}" <<'PY'
import json, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
print(json.dumps([t.encode(p).ids for p in sys.argv[2:]]))
PY
)
  ref=$("$py" "$src/tests/llm/reference_generate.py" "$dir" $N "$ids") || { echo "FAIL: reference $spec"; fails=$((fails + 1)); continue; }
  i=0
  singles=()
  for p in "${prompts[@]}"; do
    got=$("$bin" generate --local --threads 1 --no-template --max-tokens $N --json --prompt "$p" "$dir" 2>&1)
    singles+=("$got")
    if "$py" -c 'import json,sys; r=json.loads(sys.argv[1])[int(sys.argv[3])]["ids"]; g=json.loads(sys.argv[2])["token_ids"]; sys.exit(0 if r==g else 1)' "$ref" "$got" $i 2>/dev/null; then
      echo "ok: $spec greedy parity: '$p'"
    elif [ "$3" = int4 ] && "$py" - "$dir" "$ref" "$got" $i <<'PY'
# int4 with accuracy_level 4 quantises activations to int8 as onnxruntime's MLAS does, but not
# bit for bit: accept a divergence only at a near-tie of onnxruntime's own logits (same prefix,
# the two tokens within 0.02), after identical tokens up to it.
import json, sys
import numpy as np, onnxruntime as ort
d, ref, got, i = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
p, r, g = ref[i]["prompt"], ref[i]["ids"], got["token_ids"]
k = next(j for j in range(len(r)) if j >= len(g) or r[j] != g[j])
s = ort.InferenceSession(d + "/model.onnx", providers=["CPUExecutionProvider"])
seq = p + r[:k]
feed = {"input_ids": np.array([seq], np.int64), "attention_mask": np.ones((1, len(seq)), np.int64)}
for x in s.get_inputs():
    if x.name.startswith("past"):
        feed[x.name] = np.zeros((1, x.shape[1], 0, x.shape[3]), np.float16 if "16" in x.type else np.float32)
    if x.name == "position_ids":
        feed[x.name] = np.arange(len(seq))[None]
l = s.run(["logits"], feed)[0][0, -1].astype(np.float64)
gap = abs(l[r[k]] - l[g[k]]) if k < len(g) else 1e9
print(f"  near-tie at token {k}: onnxruntime logits {l[r[k]]:.4f} (its pick) vs {l[g[k]]:.4f} (ours)")
sys.exit(0 if gap < 0.02 else 1)
PY
    then
      echo "ok: $spec greedy parity up to a near-tie: '$p'"
    else
      echo "FAIL: $spec '$p': reference $("$py" -c 'import json,sys; print(json.loads(sys.argv[1])[int(sys.argv[2])]["ids"])' "$ref" $i) got $got"
      fails=$((fails + 1))
    fi
    i=$((i + 1))
  done
  # The prompts as one batch (padded, one engine run per step) give the same ids as alone. Not
  # for int4: MatMulNBits takes its int8-activation path for a few rows only (up to 4), so a
  # padded batch prefill rounds differently from a short prompt alone and may part at a near-tie.
  [ "$3" = int4 ] && continue
  args=()
  for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
  batch=$("$bin" generate --local --threads 1 --no-template --max-tokens $N --json "${args[@]}" "$dir" 2>&1)
  if "$py" -c '
import json, sys
b = json.loads(sys.argv[1])["answers"]
s = [json.loads(x) for x in sys.argv[2:]]
sys.exit(0 if [x["token_ids"] for x in b] == [x["token_ids"] for x in s] else 1)' "$batch" "${singles[@]}"; then
    echo "ok: $spec batch of ${#prompts[@]} = one by one"
  else
    echo "FAIL: $spec batch $batch differs from one by one"
    fails=$((fails + 1))
  fi
done
[ $fails = 0 ] && echo "llm_generate_parity_test: all passed" || echo "llm_generate_parity_test: $fails failed"
[ $fails = 0 ]
