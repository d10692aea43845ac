#!/usr/bin/env bash
# Generation on a real multi-process grid on loopback (issue 14, "the grid"):
#  1. two providers: `generate --peer` gives the same tokens as `--local` (greedy), and the
#     client's ledger holds one generation receipt whose token counts are the answer's; with
#     --redundancy 2 both generate, the streams agree and both are paid;
#  2. the answering provider is killed (SIGKILL) mid-answer: the answer completes on the other
#     with the same text as --local, and the two receipts' generated tokens add up;
#  3. a provider that answers from a cut context (gpugrid-faulty gen-truncate) is caught by the
#     spot check (exit 4) and disputed in the client's ledger;
#  4. with --redundancy 2 the same provider as the second stream is disputed and not paid;
#  5. with --spot-check-by peers it lies as the scorer of an honest answer: a third provider
#     settles it and the scorer is disputed, not the answer.
# The test model is a tiny random-weight Llama-style folder made by tests/llm/make_tiny_decoder.py.
# Usage: llm_grid_test.sh path/to/gpugrid SOURCE_DIR
# Exit: 0 pass; 1 failure; 77 skipped (no Python with onnx and tokenizers, or no gpugrid-faulty).
source "$2/tests/lib/loopback_grid.sh" "$@"
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if ! "$py" -c 'import onnx, tokenizers, numpy' 2>/dev/null; then
  echo "skipped: no Python with onnx and tokenizers at $py (run scripts/python_env.sh)"
  exit 77
fi
faulty="$(dirname "$bin")/gpugrid-faulty"
[ -x "$faulty" ] || { echo "skipped: $faulty is not built (configure with -DGPUGRID_TESTS=ON)"; exit 77; }
"$py" "$src/tests/llm/make_tiny_decoder.py" "$tmp/models" >"$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; echo "FAIL: cannot make the test model"; exit 1; }
model="$tmp/models/genai"
prompt="Once upon a time"
field() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d[sys.argv[2]]))' "$1" "$2"; }

"$bin" generate "$model" --local --prompt "$prompt" --max-tokens 40 --json >"$tmp/local.json" 2>"$tmp/local.err" ||
  fail "--local: $(cat "$tmp/local.err")"
want_ids="$(field "$tmp/local.json" token_ids)"
want_text="$(field "$tmp/local.json" text)"
want_n="$(field "$tmp/local.json" generated_tokens)"
[ "$want_n" -ge 10 ] 2>/dev/null || fail "--local made ${want_n:-no} tokens (the test wants at least 10)"

# 1. Two providers, same tokens as --local.
start_provider a || exit 1
start_provider b || exit 1
XDG_DATA_HOME="$tmp/client1" "$bin" generate "$model" --peer "$url_a" --peer "$url_b" --prompt "$prompt" --max-tokens 40 --json \
  >"$tmp/grid.json" 2>"$tmp/grid.err" || fail "generate --peer: $(cat "$tmp/grid.err")"
[ "$(field "$tmp/grid.json" token_ids)" = "$want_ids" ] || fail "grid tokens differ from --local: $(field "$tmp/grid.json" token_ids) vs $want_ids"
[ "$(field "$tmp/grid.json" text)" = "$want_text" ] || fail "grid text differs from --local"
[ "$(field "$tmp/grid.json" backend)" = '"grid"' ] || fail "generate --peer --json says backend $(field "$tmp/grid.json" backend)"
XDG_DATA_HOME="$tmp/client1" "$bin" ledger show --json >"$tmp/ledger1.json" 2>&1 || fail "ledger show: $(cat "$tmp/ledger1.json")"
"$py" - "$tmp/ledger1.json" "$want_n" <<'PY' || fail "client ledger after one answer: $(cat "$tmp/ledger1.json")"
import json, sys
rs = [r for r in json.load(open(sys.argv[1])) if r["kind"] == "generation"]
assert len(rs) == 1, rs
assert rs[0]["generated_tokens"] == int(sys.argv[2]), rs
PY
# --redundancy 2 (greedy): both providers generate, the streams agree, both are paid.
XDG_DATA_HOME="$tmp/client4" "$bin" generate "$model" --peer "$url_a" --peer "$url_b" --redundancy 2 --prompt "$prompt" \
  --max-tokens 40 --json >"$tmp/redundant.json" 2>"$tmp/redundant.err" || fail "generate --redundancy 2: $(cat "$tmp/redundant.err")"
[ "$(field "$tmp/redundant.json" token_ids)" = "$want_ids" ] || fail "--redundancy 2 tokens differ from --local"
XDG_DATA_HOME="$tmp/client4" "$bin" ledger show --json >"$tmp/ledger4.json" 2>&1
"$py" - "$tmp/ledger4.json" "$want_n" <<'PY' || fail "client ledger after --redundancy 2: $(cat "$tmp/ledger4.json")"
import json, sys
rs = [r for r in json.load(open(sys.argv[1])) if r["kind"] == "generation"]
assert len(rs) == 2 and len({r["provider"] for r in rs}) == 2, rs
assert all(r["generated_tokens"] == int(sys.argv[2]) for r in rs), rs
PY
kill "$pid_a" "$pid_b" 2>/dev/null
wait "$pid_a" "$pid_b" 2>/dev/null

# 2. The answering provider is killed mid-answer. Both decode slowly (gen-slow: 40 ms a token)
# so the kill lands mid-stream; the one that got the prompt says so in its event log.
for name in c d; do
  "$faulty" gen-slow offer --listen 127.0.0.1:0 --data-dir "$tmp/$name" --json >"$tmp/$name.log" 2>"$tmp/$name.err" &
  pids+=("$!")
  printf -v "pid_$name" '%s' "$!"
done
for name in c d; do
  url=""
  for _ in $(seq 1 100); do
    url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/$name.log" 2>/dev/null | head -1)"
    [ -n "$url" ] && break
    sleep 0.05
  done
  [ -n "$url" ] || { fail "provider $name did not start: $(cat "$tmp/$name.err")"; exit 1; }
  printf -v "url_$name" '%s' "$url"
done
XDG_DATA_HOME="$tmp/client2" "$bin" generate "$model" --peer "$url_c" --peer "$url_d" --prompt "$prompt" --max-tokens 40 --json \
  >"$tmp/failover.json" 2>"$tmp/failover.err" &
client=$!
victim=""
for _ in $(seq 1 200); do
  for name in c d; do
    if grep -q '"event":"generation_prompt"' "$tmp/$name.log" 2>/dev/null; then victim=$name; break 2; fi
  done
  sleep 0.05
done
if [ -z "$victim" ]; then
  fail "no provider started answering: $(cat "$tmp/c.err" "$tmp/d.err")"
else
  sleep 0.4  # a few tokens out (the folder is uploaded before the prompt)
  victim_pid="pid_$victim"
  kill -9 "${!victim_pid}"
  wait "${!victim_pid}" 2>/dev/null
fi
wait "$client" || fail "generate with a provider killed mid-answer: $(cat "$tmp/failover.err")"
[ "$(field "$tmp/failover.json" text)" = "$want_text" ] || fail "the answer after failover differs from --local: $(field "$tmp/failover.json" text)"
[ "$(field "$tmp/failover.json" token_ids)" = "$want_ids" ] || fail "the tokens after failover differ from --local"
XDG_DATA_HOME="$tmp/client2" "$bin" ledger show --json >"$tmp/ledger2.json" 2>&1
"$py" - "$tmp/ledger2.json" "$want_n" <<'PY' || fail "client ledger after failover: $(cat "$tmp/ledger2.json")"
import json, sys
rs = [r for r in json.load(open(sys.argv[1])) if r["kind"] == "generation"]
assert len(rs) == 2, "want two receipts, got %d" % len(rs)
assert len({r["provider"] for r in rs}) == 2, rs
assert sum(r["generated_tokens"] for r in rs) == int(sys.argv[2]), [r["generated_tokens"] for r in rs]
assert all(r["generated_tokens"] > 0 for r in rs), rs
PY

# 3. A provider that cuts its context is caught by the spot check and disputed.
"$faulty" gen-truncate offer --listen 127.0.0.1:0 --data-dir "$tmp/e" --json >"$tmp/e.log" 2>"$tmp/e.err" &
pids+=("$!")
url_e=""
for _ in $(seq 1 100); do
  url_e="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/e.log" 2>/dev/null | head -1)"
  [ -n "$url_e" ] && break
  sleep 0.05
done
[ -n "$url_e" ] || { fail "the faulty provider did not start: $(cat "$tmp/e.err")"; exit 1; }
XDG_DATA_HOME="$tmp/client3" "$bin" generate "$model" --peer "$url_e" --prompt "$prompt" --max-tokens 12 --json \
  >"$tmp/cheat.json" 2>"$tmp/cheat.err"
code=$?
[ "$code" = 4 ] || fail "a provider answering from a cut context: exit $code, want 4: $(cat "$tmp/cheat.err")"
grep -q "disputed" "$tmp/cheat.err" || fail "no dispute reported: $(cat "$tmp/cheat.err")"
XDG_DATA_HOME="$tmp/client3" "$bin" ledger show --json >"$tmp/ledger3.json" 2>&1
grep -q '"kind":"dispute"' "$tmp/ledger3.json" || grep -q '"kind": "dispute"' "$tmp/ledger3.json" || fail "no dispute receipt: $(cat "$tmp/ledger3.json")"

# 4. --redundancy 2 with the cut-context provider as the second (it asks more, so an honest one
# answers): the answer stands, the second stream is scored where it parts, and the cheat is
# disputed and not paid.
start_provider h || exit 1
"$faulty" gen-truncate offer --listen 127.0.0.1:0 --data-dir "$tmp/f" --price 0.01 --json >"$tmp/f.log" 2>"$tmp/f.err" &
pids+=("$!")
url_f=""
for _ in $(seq 1 100); do
  url_f="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/f.log" 2>/dev/null | head -1)"
  [ -n "$url_f" ] && break
  sleep 0.05
done
[ -n "$url_f" ] || { fail "the second faulty provider did not start: $(cat "$tmp/f.err")"; exit 1; }
XDG_DATA_HOME="$tmp/client5" "$bin" generate "$model" --peer "$url_h" --peer "$url_f" --redundancy 2 --prompt "$prompt" \
  --max-tokens 20 --json >"$tmp/second.json" 2>"$tmp/second.err" || fail "--redundancy 2 with a cheating second: $(cat "$tmp/second.err")"
grep -q "disputed" "$tmp/second.err" || fail "the cheating second provider was not disputed: $(cat "$tmp/second.err")"
XDG_DATA_HOME="$tmp/client5" "$bin" ledger show --json >"$tmp/ledger5.json" 2>&1
"$py" - "$tmp/ledger5.json" <<'PY' || fail "client ledger after a cheating second: $(cat "$tmp/ledger5.json")"
import json, sys
rs = json.load(open(sys.argv[1]))
gen = [r for r in rs if r["kind"] == "generation"]
disp = [r for r in rs if r["kind"] == "dispute"]
assert len(gen) == 1, gen            # only the honest answer is paid
assert len(disp) == 1, disp
assert disp[0]["provider"] != gen[0]["provider"], rs
PY

# 5. --spot-check-by peers: the cut-context provider scores the honest answer first (its price
# is between the two honest ones') and disagrees; a third provider settles it against the
# scorer, which is disputed and not paid; the answer stands and is paid.
start_provider g --price 0.02 || exit 1
XDG_DATA_HOME="$tmp/client6" "$bin" generate "$model" --peer "$url_h" --peer "$url_f" --peer "$url_g" --spot-check-by peers \
  --prompt "$prompt" --max-tokens 20 --json >"$tmp/peers.json" 2>"$tmp/peers.err" || fail "--spot-check-by peers: $(cat "$tmp/peers.err")"
grep -q "disputed" "$tmp/peers.err" || fail "the lying scorer was not disputed: $(cat "$tmp/peers.err")"
XDG_DATA_HOME="$tmp/client6" "$bin" ledger show --json >"$tmp/ledger6.json" 2>&1
"$py" - "$tmp/ledger6.json" <<'PY' || fail "client ledger after a lying scorer: $(cat "$tmp/ledger6.json")"
import json, sys
rs = json.load(open(sys.argv[1]))
paid = {r["provider"] for r in rs if r["kind"] == "generation"}
disp = [r for r in rs if r["kind"] == "dispute"]
assert len(paid) == 2, rs          # the answer and the scorer that settled it
assert len(disp) == 1 and disp[0]["provider"] not in paid, rs
PY

[ "$failures" = 0 ] && echo "llm grid: ok"
[ "$failures" = 0 ]
