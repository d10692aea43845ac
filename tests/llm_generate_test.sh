#!/usr/bin/env bash
# `gpugrid generate` and `gpugrid chat` on tiny random-weight decoders (tests/llm/make_tiny_decoder.py)
# in the three folder layouts:
#   - greedy parity: the same token ids as onnxruntime-genai (genai folder, GroupQueryAttention)
#     and as a plain onnxruntime loop (optimum folder; merged decoder with If), several prompts
#   - batched generation (several --prompt) gives each prompt's ids of a run alone
#   - --json fields; stop strings (never printed) and stop tokens (the model's EOS ids)
#   - sampling with a seed is reproducible, another seed differs
#   - chat on stdin: history, /reset, /system, multi-line input, EOF exits 0, the KV cache
#     reused by the next turn
#   - bad input: no tokenizer, no config, unknown tokenizer kind, unsupported template
#     construct, prompt longer than the context: one line naming it, exit 2
#
# Usage: llm_generate_test.sh GPUGRID_BINARY SOURCE_DIR   (ctest passes both)
# Exit: 0 pass; 1 failure; 77 skipped (no .venv with onnxruntime-genai: run scripts/python_env.sh).
# Environment: GPUGRID_PYTHON  Python to use (default SOURCE_DIR/.venv/bin/python)
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: llm_generate_test.sh GPUGRID_BINARY SOURCE_DIR" >&2; exit 2; }
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
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

"$py" "$src/tests/llm/make_tiny_decoder.py" "$work/m" >/dev/null || { echo "FAIL: make_tiny_decoder.py"; exit 1; }
gen() { "$bin" generate --local --threads 1 "$@"; }

# ---- greedy parity with the references
prompts=("Hello world" "The quick brown fox" "Once upon a time there was" "1 2 3" "Caf\u00e9 na\u00efve")
N=24
ids_json=$("$py" - "$work/m/genai/tokenizer.json" "${prompts[@]}" <<'EOF'
import json, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
print(json.dumps([t.encode(p.encode().decode("unicode_escape")).ids for p in sys.argv[2:]]))
EOF
)
for kind in genai optimum merged; do
  ref=$("$py" "$src/tests/llm/reference_generate.py" "$work/m/$kind" $N "$ids_json") || { fail "$kind reference"; continue; }
  i=0
  for p in "${prompts[@]}"; do
    text=$(printf "$p")
    got=$(gen "$work/m/$kind" --no-template --max-tokens $N --json --prompt "$text") || { fail "$kind generate '$text'"; i=$((i+1)); continue; }
    if "$py" -c 'import json,sys; r=json.loads(sys.argv[1])[int(sys.argv[3])]; g=json.loads(sys.argv[2]); sys.exit(0 if r["ids"]==g["token_ids"] else 1)' "$ref" "$got" $i; then
      ok "$kind greedy parity: '$text'"
    else
      fail "$kind greedy parity '$text': reference $(echo "$ref" | "$py" -c "import json,sys; print(json.load(sys.stdin)[$i]['ids'])") got $got"
    fi
    i=$((i+1))
  done
done

# ---- batched generation equals one by one
for kind in genai optimum; do
  args=()
  for p in "${prompts[@]}"; do args+=(--prompt "$(printf "$p")"); done
  b=$(gen "$work/m/$kind" --no-template --max-tokens 16 --json "${args[@]}") || { fail "$kind batch run"; continue; }
  i=0; same=1
  for p in "${prompts[@]}"; do
    s=$(gen "$work/m/$kind" --no-template --max-tokens 16 --json --prompt "$(printf "$p")")
    "$py" -c 'import json,sys; b=json.loads(sys.argv[1])["answers"][int(sys.argv[3])]; s=json.loads(sys.argv[2]); sys.exit(0 if b["token_ids"]==s["token_ids"] and b["text"]==s["text"] else 1)' "$b" "$s" $i || { same=0; echo "  batch $i: $b vs $s"; }
    i=$((i+1))
  done
  [ $same = 1 ] && ok "$kind batch of ${#prompts[@]} (different lengths) = one by one" || fail "$kind batch differs from one by one"
done

# ---- --json fields
j=$(gen "$work/m/genai" --prompt "Hello" --max-tokens 5 --json)
"$py" -c '
import json, sys
j = json.loads(sys.argv[1])
need = ["text", "token_ids", "prompt_tokens", "generated_tokens", "finish_reason", "time_to_first_token_ms",
        "total_ms", "decode_tokens_per_s", "providers", "cost", "backend"]
missing = [k for k in need if k not in j]
assert not missing, missing
assert j["generated_tokens"] == 5 and len(j["token_ids"]) == 5 and j["finish_reason"] == "length", j
assert j["prompt_tokens"] > 3 and j["backend"] == "local" and j["providers"] == [] and j["cost"] == 0, j
' "$j" && ok "--json fields (chat template applied, 5 tokens, finish length)" || fail "--json fields: $j"
plain=$(gen "$work/m/genai" --prompt "Hello" --max-tokens 5)
[ "$plain" = "$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["text"])' "$j")" ] && ok "streamed text = --json text" || fail "streamed '$plain' vs $j"
echo -n "Hello" | gen "$work/m/genai" --max-tokens 5 --json > "$work/stdin.json" && cmp -s <(echo "$j" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["token_ids"])') <("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token_ids"])' "$work/stdin.json") && ok "prompt from stdin" || fail "prompt from stdin"

# ---- stop strings and stop tokens
full=$(gen "$work/m/optimum" --no-template --prompt "Hello world" --max-tokens 24 --json)
stop=$("$py" -c 'import json,sys; t=json.loads(sys.argv[1])["text"]; print(t[6:9], end="")' "$full")
expect_text=$("$py" -c 'import json,sys; t=json.loads(sys.argv[1])["text"]; print(json.dumps(t[:t.find(t[6:9])]))' "$full")
got=$(gen "$work/m/optimum" --no-template --prompt "Hello world" --max-tokens 24 --json --stop "$stop" --stop "never-there")
"$py" -c '
import json, sys
g = json.loads(sys.argv[1]); want = json.loads(sys.argv[2])
assert g["text"] == want and g["finish_reason"] == "stop_string", (g, want)' "$got" "$expect_text" && ok "stop string: text ends before it" || fail "stop string '$stop': $got (want $expect_text)"
streamed=$(gen "$work/m/optimum" --no-template --prompt "Hello world" --max-tokens 24 --stop "$stop")
[ "$streamed" = "$("$py" -c 'import json,sys; print(json.loads(sys.argv[1]))' "$expect_text")" ] && ok "stop string never streamed" || fail "streamed with stop: '$streamed'"
cp -r "$work/m/optimum" "$work/eos"
eos=$("$py" -c 'import json,sys; print(json.loads(sys.argv[1])["token_ids"][4])' "$full")
"$py" -c '
import json, sys
p = sys.argv[1] + "/generation_config.json"; c = json.load(open(p)); c["eos_token_id"] = [int(sys.argv[2])]; json.dump(c, open(p, "w"))' "$work/eos" "$eos"
got=$(gen "$work/eos" --no-template --prompt "Hello world" --max-tokens 24 --json)
"$py" -c '
import json, sys
g = json.loads(sys.argv[1]); f = json.loads(sys.argv[2])
first = f["token_ids"].index(int(sys.argv[3]))
assert g["token_ids"] == f["token_ids"][:first + 1] and g["finish_reason"] == "stop", g' "$got" "$full" "$eos" && ok "stop token (EOS) ends the answer" || fail "stop token: $got"

# ---- sampling: the same seed gives the same answer
a=$(gen "$work/m/genai" --prompt "Hello" --max-tokens 16 --temperature 1 --top-k 50 --seed 5 --json)
b=$(gen "$work/m/genai" --prompt "Hello" --max-tokens 16 --temperature 1 --top-k 50 --seed 5 --json)
c=$(gen "$work/m/genai" --prompt "Hello" --max-tokens 16 --temperature 1 --top-k 50 --seed 6 --json)
ids() { "$py" -c 'import json,sys; print(json.loads(sys.argv[1])["token_ids"])' "$1"; }
[ "$(ids "$a")" = "$(ids "$b")" ] && ok "seed 5 twice: same tokens" || fail "seed reproducibility: $a vs $b"
[ "$(ids "$a")" != "$(ids "$c")" ] && ok "seed 6: other tokens" || fail "seeds 5 and 6 gave the same tokens"

# ---- chat on stdin
printf 'Hello\nHow are you\n/reset\nHello\n/system Be brief\nHello\n"""\nline one\nline two\n"""\nfirst \\\nsecond\n/stats\n/bogus\n' |
  "$bin" chat --local --threads 1 "$work/m/genai" --max-tokens 6 --stop $'\n' >"$work/chat.out" 2>"$work/chat.err"
rc=$?
[ $rc = 0 ] && ok "chat exits 0 at EOF" || fail "chat exit $rc: $(cat "$work/chat.err")"
mapfile -t lines <"$work/chat.out"
[ "${#lines[@]}" = 6 ] && ok "chat: six answers" || fail "chat answers: ${#lines[@]}: $(cat "$work/chat.out")"
# The answer after /reset equals the first; the one with a system prompt is rendered differently.
h1=$(gen "$work/m/genai" --prompt "Hello" --max-tokens 6 --stop $'\n')
hs=$(gen "$work/m/genai" --prompt "Hello" --system "Be brief" --max-tokens 6 --stop $'\n')
[ "${lines[0]}" = "$h1" ] && [ "${lines[2]}" = "$h1" ] && ok "chat: /reset forgets the history" || fail "chat reset: '${lines[0]}' '${lines[2]}' vs '$h1'"
[ "${lines[3]}" = "$hs" ] && ok "chat: /system sets the system message" || fail "chat system: '${lines[3]}' vs '$hs'"
grep -q "unknown chat command '/bogus'" "$work/chat.err" && ok "chat: unknown command named" || fail "chat: $(cat "$work/chat.err")"
# The second turn starts with the first turn's tokens: their KV cache is reused, only the rest
# is prefilled (the stats line counts the reused tokens).
printf '/stats\nHello\nHow are you\n' |
  "$bin" chat --local --threads 1 "$work/m/genai" --max-tokens 6 --stop $'\n' >"$work/reuse.out" 2>"$work/reuse.err"
mapfile -t st < <(grep -o '([0-9]* from the cache)' "$work/reuse.err" | tr -dc '0-9\n')
[ "${#st[@]}" = 2 ] && [ "${st[0]}" = 0 ] && [ "${st[1]}" -gt 0 ] && ok "chat: the second turn reuses ${st[1]} cached tokens" ||
  fail "chat cache reuse: $(cat "$work/reuse.err")"

# Ctrl-C (SIGINT) does not end the chat: it goes on reading and answering.
mkfifo "$work/chat.in"
"$bin" chat --local --threads 1 "$work/m/genai" --max-tokens 6 --stop $'\n' <"$work/chat.in" >"$work/sig.out" 2>"$work/sig.err" &
cpid=$!
exec 3>"$work/chat.in"
echo Hello >&3
sleep 1
kill -INT $cpid 2>/dev/null
sleep 0.3
echo Hello >&3
exec 3>&-
wait $cpid
rc=$?
mapfile -t sig <"$work/sig.out"
[ $rc = 0 ] && [ "${#sig[@]}" = 2 ] && [ "${sig[1]}" = "$h1" ] && ok "chat: SIGINT stops an answer, not the chat" ||
  fail "chat after SIGINT: exit $rc, answers ${#sig[@]}: $(cat "$work/sig.out" "$work/sig.err")"

# ---- bad input: one line, exit 2
expect_bad() {  # NAME PATTERN CMD...
  local name=$1 pat=$2; shift 2
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] && printf '%s' "$err" | grep -q -- "$pat"; then ok "bad input: $name"
  else fail "bad input $name: rc $rc, '$err'"; fi
}
cp -r "$work/m/genai" "$work/notok"; rm "$work/notok/tokenizer.json"
expect_bad "no tokenizer" "tokenizer.json" gen "$work/notok" --prompt hi
cp -r "$work/m/optimum" "$work/nocfg"; rm "$work/nocfg/config.json"
expect_bad "no config" "config.json" gen "$work/nocfg" --prompt hi
cp -r "$work/m/optimum" "$work/badtok"
"$py" -c 'import json,sys; p=sys.argv[1]; t=json.load(open(p)); t["model"]["type"]="WordPiece"; json.dump(t, open(p,"w"))' "$work/badtok/tokenizer.json"
expect_bad "unknown tokenizer kind" "WordPiece" gen "$work/badtok" --prompt hi
cp -r "$work/m/optimum" "$work/badtpl"
"$py" -c 'import json,sys; p=sys.argv[1]; t=json.load(open(p)); t["chat_template"]="{% filter upper %}x{% endfilter %}"; json.dump(t, open(p,"w"))' "$work/badtpl/tokenizer_config.json"
expect_bad "unsupported template construct" "filter" gen "$work/badtpl" --prompt hi
expect_bad "prompt longer than the context" "context is 128" gen "$work/m/genai" --no-template --prompt "$(printf 'word %.0s' $(seq 200))"
expect_bad "missing folder" "not a model folder" gen "$work/none" --prompt hi
expect_bad "chat: no tokenizer" "tokenizer.json" "$bin" chat --local "$work/notok"

[ $fails = 0 ] && echo "llm_generate_test: all passed" || echo "llm_generate_test: $fails failed"
[ $fails = 0 ]
