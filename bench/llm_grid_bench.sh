#!/usr/bin/env bash
# Decode tokens/s of `gpugrid generate` through the grid against --local, on loopback: the same
# greedy answer of MAX_TOKENS tokens, RUNS times each, in this order per round: --local, the
# embedded local grid (no --peer), and one `gpugrid offer` provider on loopback (--peer).
# The provider is warm (its first answer, which uploads and loads the folder, is not counted).
# Usage: bench/llm_grid_bench.sh path/to/gpugrid [MODEL_DIR] [MAX_TOKENS=100] [RUNS=5]
#   MODEL_DIR defaults to the tiny test decoder (tests/llm/make_tiny_decoder.py); it is so
#   small that per-token overheads dominate: give a larger folder for a realistic ratio.
# Prints one JSON line per setup: median decode tokens/s and time to first token, and the
# ratio to --local.
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$(cd "$(dirname "$0")/.." && pwd)"
max=${3:-100}
runs=${4:-5}
tmp="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
model="${2:-}"
if [ -z "$model" ]; then
  "$py" "$src/tests/llm/make_tiny_decoder.py" "$tmp/models" >/dev/null || exit 1
  model="$tmp/models/genai"
fi
"$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/p" --json >"$tmp/p.log" 2>&1 &
pids+=("$!")
url=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/p.log" | head -1)"
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { echo "the provider did not start: $(cat "$tmp/p.log")" >&2; exit 1; }
one() {  # SETUP: one answer, prints "tokens_per_s ttft_ms"
  local args=()
  case "$1" in
    local) args=(--local) ;;
    embedded) args=() ;;
    peer) args=(--peer "$url") ;;
  esac
  "$bin" generate "$model" "${args[@]}" --prompt "Once upon a time" --max-tokens "$max" --json 2>>"$tmp/err.log" |
    "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d["decode_tokens_per_s"], d["time_to_first_token_ms"], d["generated_tokens"])'
}
one peer >/dev/null  # upload and load once
for setup in local embedded peer; do : >"$tmp/$setup.txt"; done
for _ in $(seq 1 "$runs"); do
  for setup in local embedded peer; do one "$setup" >>"$tmp/$setup.txt"; done
done
"$py" - "$tmp" "$max" <<'PY'
import json, statistics, sys
tmp, max_tokens = sys.argv[1], int(sys.argv[2])
rows = {}
for setup in ["local", "embedded", "peer"]:
    vals = [list(map(float, l.split())) for l in open(f"{tmp}/{setup}.txt") if l.strip()]
    rows[setup] = (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals), int(vals[0][2]))
base = rows["local"][0]
for setup, (tps, ttft, n) in rows.items():
    print(json.dumps({"setup": setup, "generated_tokens": n, "decode_tokens_per_s": round(tps, 1),
                      "time_to_first_token_ms": round(ttft, 1), "ratio_to_local": round(tps / base, 3) if base else None}))
PY
