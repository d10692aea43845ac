#!/usr/bin/env bash
# `gpugrid serve` end to end: the Open Inference Protocol v2 through the real Triton client
# (tritonclient[http], JSON and binary tensors, metadata, errors) on the embedded grid and on
# --local; bad and slow clients over raw sockets; API keys (401, refusing to listen on a public
# address without keys); model reload; TLS; SIGTERM.
# Usage: tests/serve_v2_test.sh path/to/gpugrid path/to/source
# Exit 77 (skipped) when the Python test environment lacks tritonclient (scripts/python_env.sh).
py=${GPUGRID_PYTHON:-$2/.venv/bin/python}
if ! "$py" -c "import tritonclient.http, onnxruntime, numpy" >/dev/null 2>&1; then
  echo "skipped: $py lacks tritonclient[http] or onnxruntime (run scripts/python_env.sh)"
  exit 77
fi
source "$2/tests/lib/loopback_grid.sh" "$@"
mkdir -p "$tmp/models"
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

# ---- 1. the Triton client against the embedded grid, then against --local
for mode in grid local; do
  args=()
  [ "$mode" = local ] && args=(--local)
  start_serve "$mode" "${args[@]}" || exit 1
  "$py" "$src/tests/serve/triton_client_test.py" "$addr" "$tmp/models" >"$tmp/triton_$mode.out" 2>&1 ||
    fail "triton client ($mode): $(grep -v '^ok' "$tmp/triton_$mode.out" | tail -5)"
  hdr="$(curl -s -D - -o /dev/null -X POST "http://$addr/v2/models/digits/infer" \
    -d '{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":['"$(seq -s, 0 63)"']}]}')"
  echo "$hdr" | grep -qi '^X-Gpugrid-Providers: [a-z0-9]' || fail "no providers header ($mode): $hdr"
  echo "$hdr" | grep -qi '^X-Gpugrid-Cost: ' || fail "no cost header ($mode)"
  kill -TERM "$pid"
  wait "$pid"
  code=$?
  [ "$code" -eq 0 ] || fail "serve ($mode) exited $code after SIGTERM"
done
[ "$mode" = local ] && grep -q '"backend":"the local engine' "$tmp/local.log" || fail "serve --local does not say it runs locally"

# ---- 1b. in front of a provider on the network (--peer): the providers header names it
"$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/provider" --json >"$tmp/provider.log" 2>"$tmp/provider.err" &
pids+=("$!")
purl=""
for _ in $(seq 1 100); do
  purl="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/provider.log" 2>/dev/null | head -1)"
  [ -n "$purl" ] && break
  sleep 0.05
done
node="$(node_id_of provider)"
start_serve peer --peer "$purl" --data-dir "$tmp/client" || exit 1
hdr="$(curl -s -D - -o "$tmp/peer.json" -X POST "http://$addr/v2/models/digits/infer" \
  -d '{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":['"$(seq -s, 0 63)"']}]}')"
echo "$hdr" | grep -qi "^X-Gpugrid-Providers: $node" || fail "serve --peer: the providers header does not name the provider $node: $hdr"
grep -q '"name":"logits"' "$tmp/peer.json" || fail "serve --peer infer: $(cat "$tmp/peer.json")"
kill -TERM "$pid"
wait "$pid" || fail "serve --peer did not exit 0 after SIGTERM"

# ---- 2. bad and slow clients, with API keys
printf '# keys\nkey-0123456789abcdef\n' >"$tmp/keys.txt"
start_serve raw --local --api-key-file "$tmp/keys.txt" --max-body-mb 1 --header-timeout 1 --body-timeout 1 || exit 1
grep -q '"auth":true' "$tmp/raw.log" || fail "keys given but auth is off"
"$py" "$src/tests/serve/raw_http_test.py" "$addr" key-0123456789abcdef >"$tmp/raw.out" 2>&1 ||
  fail "raw HTTP checks: $(grep -v '^ok' "$tmp/raw.out" | tail -5)"
"$py" "$src/tests/serve/triton_client_test.py" "$addr" "$tmp/models" key-0123456789abcdef >"$tmp/triton_key.out" 2>&1 ||
  fail "triton client with a key: $(grep -v '^ok' "$tmp/triton_key.out" | tail -3)"
code="$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/models/digits")"
[ "$code" = 401 ] || fail "no key gave $code, not 401"

# ---- 3. model reload: a new file is served, a changed one reloaded, a removed one gone
cp "$src/examples/digits/digits.onnx" "$tmp/models/digits2.onnx"
sleep 1.2
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer key-0123456789abcdef' "http://$addr/v2/models/digits2/ready")"
[ "$code" = 200 ] || fail "a new model file is not served ($code)"
printf 'not a model any more' >"$tmp/models/digits2.onnx"
sleep 1.2
body="$(curl -s -H 'Authorization: Bearer key-0123456789abcdef' "http://$addr/v2/models/digits2/ready")"
echo "$body" | grep -q '"error"' || fail "a model file that became garbage is still ready: $body"
rm "$tmp/models/digits2.onnx"
sleep 1.2
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer key-0123456789abcdef' "http://$addr/v2/models/digits2")"
[ "$code" = 404 ] || fail "a removed model still answers ($code)"
metrics="$(curl -s -H 'Authorization: Bearer key-0123456789abcdef' "http://$addr/metrics")"
echo "$metrics" | grep -q '^gpugrid_serve_model_reloads_total [1-9]' ||
  fail "metrics count no reload: $(echo "$metrics" | grep reloads)"
kill -TERM "$pid"
wait "$pid"

# ---- 3b. the per-key rate limit answers 429 with Retry-After
start_serve rate --local --api-key-file "$tmp/keys.txt" --rate-limit 0.5 --rate-burst 2 || exit 1
codes=""
for _ in 1 2 3; do
  codes="$codes $(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer key-0123456789abcdef' "http://$addr/v2/models/digits")"
done
[ "$codes" = " 200 200 429" ] || fail "rate limit: got$codes, not 200 200 429"
hdr="$(curl -s -D - -o /dev/null -H 'Authorization: Bearer key-0123456789abcdef' "http://$addr/v2/models/digits")"
echo "$hdr" | grep -qi '^Retry-After: [1-9]' || fail "429 without Retry-After: $hdr"
kill -TERM "$pid"
wait "$pid"

# ---- 4. anything but loopback needs keys
"$bin" serve --listen 0.0.0.0:0 --models "$tmp/models" --local >"$tmp/public.out" 2>"$tmp/public.err"
code=$?
[ "$code" -eq 2 ] || fail "serve on 0.0.0.0 without keys exited $code, not 2"
grep -q "without API keys" "$tmp/public.err" || fail "no reason given: $(cat "$tmp/public.err")"
printf 'short\n' >"$tmp/badkeys.txt"
"$bin" serve --listen 127.0.0.1:0 --models "$tmp/models" --local --api-key-file "$tmp/badkeys.txt" >/dev/null 2>"$tmp/badkeys.err"
[ $? -eq 2 ] && grep -q "badkeys.txt:1" "$tmp/badkeys.err" || fail "a bad key file is not refused by line: $(cat "$tmp/badkeys.err")"
"$bin" serve --listen 127.0.0.1:0 --models "$tmp/nowhere" --local >/dev/null 2>"$tmp/nomodels.err"
[ $? -eq 2 ] || fail "a missing model folder is not refused"

# ---- 5. TLS
if openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 -subj /CN=localhost \
  >/dev/null 2>&1; then
  start_serve tls --local --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" || exit 1
  grep -q '"url":"https://' "$tmp/tls.log" || fail "TLS serve does not say https"
  code="$(curl -sk -o /dev/null -w '%{http_code}' "https://$addr/v2/health/ready")"
  [ "$code" = 200 ] || fail "https health check gave $code"
  out="$(curl -sk -X POST "https://$addr/v2/models/digits/infer" \
    -d '{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":['"$(seq -s, 0 63)"']}]}')"
  echo "$out" | grep -q '"name":"logits"' || fail "https infer: $out"
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/health/ready")"
  [ "$code" != 200 ] || fail "plain HTTP accepted on the TLS port"
  kill -TERM "$pid"
  wait "$pid"
fi

[ "$failures" -eq 0 ] || exit 1
echo "serve_v2_test: all checks passed"
