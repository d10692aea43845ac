#!/usr/bin/env bash
# `gpugrid serve`'s OpenAI-compatible API end to end with the real `openai` Python package
# (tests/serve/openai_client_test.py: models, chat and completions with and without streaming,
# seeds, stop strings, n, usage against the tokenizer, errors as the package's exceptions, a
# client that disconnects mid-stream) on --local with the bundled chat model; then, over curl and
# the package: errors in OpenAI's format (400, 413), /v2 served alongside, model folders picked
# up and dropped, API keys (401) and rate limits (429), the embedded grid (providers header,
# x_gpugrid in the last chunk), and a provider over --peer (ledger: paid tokens = usage; a
# stream cut short is not paid to max_tokens).
# Usage: tests/serve_openai_test.sh path/to/gpugrid path/to/source
# Exit 77 (skipped) when the Python test environment lacks openai (scripts/python_env.sh).
py=${GPUGRID_PYTHON:-$2/.venv/bin/python}
if ! "$py" -c "import openai, tokenizers, jinja2" >/dev/null 2>&1; then
  echo "skipped: $py lacks openai, tokenizers or jinja2 (run scripts/python_env.sh)"
  exit 77
fi
source "$2/tests/lib/loopback_grid.sh" "$@"
mkdir -p "$tmp/models"
cp -r "$src/examples/chat" "$tmp/models/chat"
cp "$src/examples/digits/digits.onnx" "$tmp/models/"

# start_serve NAME ARGS...: starts serve on a free loopback port; sets addr (HOST:PORT) and pid.
start_serve() {
  local name="$1"
  shift
  "$bin" serve --listen 127.0.0.1:0 --models "$tmp/models" --json "$@" >"$tmp/$name.log" 2>"$tmp/$name.err" &
  pid=$!
  pids+=("$pid")
  addr=""
  for _ in $(seq 1 200); do
    addr="$(sed -n 's/.*"url":"https\{0,1\}:\/\/\([^"]*\)".*/\1/p' "$tmp/$name.log" 2>/dev/null | head -1)"
    [ -n "$addr" ] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  fail "serve $name did not start: $(cat "$tmp/$name.err")"
  return 1
}
stop_serve() {
  kill -TERM "$pid"
  wait "$pid"
  local code=$?
  [ "$code" -eq 0 ] || fail "serve $1 exited $code after SIGTERM"
}
chat='{"model":"chat","messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0}'

# ---- 1. the openai package against --local (and one that needs a key, with a rate limit)
key=sk-test-0123456789abcdef0123456789
printf '%s\n' "$key" >"$tmp/keys.txt"
start_serve keys --local --api-key-file "$tmp/keys.txt" --rate-limit 0.5 --rate-burst 2 || exit 1
keys_addr="$addr" keys_pid="$pid"
start_serve local --local --max-body-mb 1 || exit 1
grep -q '"llm_models":1' "$tmp/local.log" || fail "serve does not count the generation model: $(cat "$tmp/local.log")"
"$py" "$src/tests/serve/openai_client_test.py" "http://$addr/v1" "$src/examples/chat" chat "http://$keys_addr/v1" "$key" \
  >"$tmp/client.out" 2>&1 || fail "openai client: $(grep -v '^ok' "$tmp/client.out" | tail -8)"

# ---- 2. errors in OpenAI's format from every layer; /v2 alongside
err_of() { "$py" -c 'import json,sys; e=json.load(sys.stdin)["error"]; print(e["type"], e["param"], e["message"])'; }
out="$(curl -s -w ' %{http_code}' "http://$addr/v1/chat/completions" -d '{"model": "chat", ')"
[ "${out##* }" = 400 ] && echo "${out% *}" | err_of | grep -q '^invalid_request_error None the request body is not valid JSON' ||
  fail "malformed JSON: $out"
head -c $((2 << 20)) /dev/zero | tr '\0' 'a' >"$tmp/big.txt"
out="$(curl -s -w ' %{http_code}' -H 'Content-Type: application/json' --data-binary @"$tmp/big.txt" "http://$addr/v1/completions")"
[ "${out##* }" = 413 ] && echo "${out% *}" | err_of | grep -q 'over the limit' || fail "oversized body: ${out:0:200}"
out="$(curl -s -w ' %{http_code}' "http://$addr/v1/embeddings" -d '{}')"
[ "${out##* }" = 404 ] && echo "${out% *}" | err_of | grep -q 'no such route' || fail "unknown /v1 route: $out"
out="$(curl -s -w ' %{http_code}' "http://$addr/v1/chat/completions")"
[ "${out##* }" = 405 ] || fail "GET on chat completions: $out"
out="$(curl -s "http://$addr/v2/models/digits/infer" \
  -d '{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":['"$(seq -s, 0 63)"']}]}')"
echo "$out" | grep -q '"name":"logits"' || fail "/v2 infer next to /v1: $out"
out="$(curl -s "http://$addr/v2/models/nope")"
echo "$out" | grep -q '^{"error":"unknown model' || fail "/v2 errors keep their own format: $out"

# ---- 3. model folders are picked up when added and dropped when removed
cp -r "$tmp/models/chat" "$tmp/models/chat2"
sleep 1.1
curl -s "http://$addr/v1/models" | grep -q '"id":"chat2"' || fail "an added model folder is not listed"
out="$(curl -s "http://$addr/v1/chat/completions" -d "${chat/\"chat\"/\"chat2\"}")"
echo "$out" | grep -q '"object":"chat.completion"' || fail "the added model does not answer: $out"
rm -rf "$tmp/models/chat2"
sleep 1.1
curl -s "http://$addr/v1/models" | grep -q '"id":"chat2"' && fail "a removed model folder is still listed"
code="$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v1/chat/completions" -d "${chat/\"chat\"/\"chat2\"}")"
[ "$code" = 404 ] || fail "a removed model answers $code, not 404"
stop_serve local

code="$(curl -s -o /dev/null -w '%{http_code}' "http://$keys_addr/v1/models")"
[ "$code" = 401 ] || fail "/v1/models without a key gave $code"
kill -TERM "$keys_pid"
wait "$keys_pid" || fail "serve keys did not exit 0 after SIGTERM"

# ---- 4. the embedded grid: providers in the headers and in the last stream chunk
start_serve grid || exit 1
hdr="$(curl -s -D - -o "$tmp/grid.json" "http://$addr/v1/chat/completions" -d "$chat")"
echo "$hdr" | grep -qi '^X-Gpugrid-Providers: [a-z0-9]' || fail "no providers header (grid): $hdr"
echo "$hdr" | grep -qi '^X-Gpugrid-Cost: ' || fail "no cost header (grid)"
grep -q '"object":"chat.completion"' "$tmp/grid.json" || fail "grid chat: $(cat "$tmp/grid.json")"
curl -sN "http://$addr/v1/completions" -d '{"model":"chat","prompt":"In the beginning","max_tokens":4,"stream":true}' >"$tmp/grid.sse"
tail -c 14 "$tmp/grid.sse" | cmp -s - <(printf 'data: [DONE]\n\n') || fail "grid stream does not end with [DONE]: $(tail -c 200 "$tmp/grid.sse")"
grep '"finish_reason":"' "$tmp/grid.sse" | grep -q '"x_gpugrid":{"cost":' || fail "no x_gpugrid in the last chunk: $(cat "$tmp/grid.sse")"
stop_serve grid

# ---- 5. in front of a provider (--peer): paid tokens = usage; a stream cut short is paid for
# what was generated before the cut, not for max_tokens
start_provider prov || exit 1
start_serve peer --peer "$url_prov" || exit 1
"$py" - "http://$addr/v1" >"$tmp/peer.out" 2>&1 <<'EOF' || fail "--peer: $(tail -3 "$tmp/peer.out")"
import sys
import openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
r = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=12, temperature=0)
print("usage", r.usage.completion_tokens)
s = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=400, temperature=0.5,
                              seed=3, stream=True, extra_body={"ignore_eos": True})
n = 0
for ch in s:
    if ch.choices and ch.choices[0].delta.content:
        n += 1
        if n >= 5:
            break
s.close()
print("received", n)
EOF
sleep 1
"$bin" ledger show --json >"$tmp/peer_ledger.json" 2>&1 || fail "ledger show: $(cat "$tmp/peer_ledger.json")"
"$py" - "$tmp/peer_ledger.json" "$tmp/peer.out" <<'EOF' || fail "--peer ledger: $(cat "$tmp/peer_ledger.json")"
import json, sys
rs = sorted((r for r in json.load(open(sys.argv[1])) if r["kind"] == "generation"), key=lambda r: r["index"])
out = dict(line.split() for line in open(sys.argv[2]))
assert len(rs) == 2, rs
assert rs[0]["generated_tokens"] == int(out["usage"]), (rs[0], out)
assert int(out["received"]) <= rs[1]["generated_tokens"] < 100, (rs[1], out)
EOF
# Four requests at once through one serve process: each answer is the one it gets alone, and
# each is paid once, for its own tokens.
"$py" - "http://$addr/v1" >"$tmp/together.out" 2>&1 <<'EOF' || fail "--peer, four at once: $(tail -3 "$tmp/together.out")"
import concurrent.futures, sys
import openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
def ask(k):
    r = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"Question {k}"}],
                                  max_tokens=6 + k, temperature=0)
    return r.choices[0].message.content, r.usage.completion_tokens
alone = [ask(k) for k in range(4)]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    together = list(pool.map(ask, range(4)))
assert together == alone, (together, alone)
print(sum(n for _, n in alone + together))
EOF
sleep 1
"$bin" ledger show --json >"$tmp/peer_ledger.json" 2>&1 || fail "ledger show: $(cat "$tmp/peer_ledger.json")"
"$py" - "$tmp/peer_ledger.json" "$(tail -1 "$tmp/together.out")" <<'EOF' || fail "--peer ledger, four at once: $(cat "$tmp/peer_ledger.json")"
import json, sys
rs = sorted((r for r in json.load(open(sys.argv[1])) if r["kind"] == "generation"), key=lambda r: r["index"])
assert len(rs) == 2 + 8, len(rs)
assert sum(r["generated_tokens"] for r in rs[2:]) == int(sys.argv[2]), (rs[2:], sys.argv[2])
EOF
stop_serve peer

[ "$failures" -eq 0 ] || exit 1
echo "serve_openai_test: all checks passed"
