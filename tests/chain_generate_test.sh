#!/usr/bin/env bash
# Generation sessions paid per token on a local EVM dev chain (tests/tools/devchain.py), with
# real processes and a tiny model folder (tests/llm/make_tiny_decoder.py):
#   a chain-paid provider's GenBid carries chain terms; `generate --json` labels its payment
#   "chain" with paid_wei; the provider's ledger, the client's ledger and (after drain) the
#   channel's redeemed amount on chain all equal what the client paid; a price limit in wei
#   below the bid leaves no provider; a client that stops paying after the prompt
#   (gpugrid-faulty gen-unpaid) is cut off after at most the credit of 32 tokens, and the
#   provider is paid exactly the prompt.
# Usage: chain_generate_test.sh GPUGRID_BINARY SOURCE_DIR
# Exit: 0 pass; 1 fail; 77 skipped (no Python test environment, or no gpugrid-faulty).
set -uo pipefail
bin=${1:?usage: chain_generate_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
faulty="$(dirname "$bin")/gpugrid-faulty"
if ! "$py" -c "import eth_tester, eth_account, onnx, tokenizers, numpy" >/dev/null 2>&1; then
  echo "skipped: $py lacks eth-tester/eth-account/onnx/tokenizers (run scripts/python_env.sh)"
  exit 77
fi
[ -x "$faulty" ] || { echo "skipped: $faulty is not built (configure with -DGPUGRID_TESTS=ON)"; exit 77; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$py" "$src/tests/tools/devchain.py" --port 0 --ready "$tmp/ready" 2>"$tmp/chain.log" &
pids+=($!)
"$py" "$src/tests/llm/make_tiny_decoder.py" "$tmp/models" >"$tmp/make.log" 2>&1 || { cat "$tmp/make.log"; fail "cannot make the test model"; }
model="$tmp/models/genai"
for _ in $(seq 1 480); do [ -f "$tmp/ready" ] && break; sleep 0.25; done
[ -f "$tmp/ready" ] || { cat "$tmp/chain.log"; fail "the dev chain did not start"; }
field() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$tmp/ready" "$1"; }
url=$(field url); contract=$(field contract)
rpc() {
  "$py" - "$url" "$1" "$2" <<'PY'
import json, sys, urllib.request
url, method, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
req = urllib.request.Request(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
                             {"Content-Type": "application/json"})
print(json.dumps(json.loads(urllib.request.urlopen(req).read())["result"]))
PY
}
jget() { "$py" -c "import json,sys; d=json.loads(sys.argv[1]); print(eval('d'+sys.argv[2]))" "$1" "$2"; }

export GPUGRID_CHAIN_RPC="$url" GPUGRID_CHAIN_CONTRACT="$contract"
# `generate` finds its data folder through XDG_DATA_HOME (it has no --data-dir).
C="$tmp/client/gpugrid" C2="$tmp/unpaid/gpugrid" P="$tmp/provider"
provider=$(jget "$("$bin" wallet show --data-dir "$P" --json 2>/dev/null)" "['address']") || fail "wallet show (provider)"
rpc dev_fund "[\"$provider\", \"0xde0b6b3a7640000\"]" >/dev/null   # 1, for gas
channel_of() {  # channel_of DATA_DIR: fund the wallet and open a channel with the provider
  local who
  who=$(jget "$("$bin" wallet show --data-dir "$1" --json 2>/dev/null)" "['address']") || fail "wallet show ($1)"
  rpc dev_fund "[\"$who\", \"0x8ac7230489e80000\"]" >/dev/null    # 10
  local dep
  dep=$("$bin" wallet deposit --data-dir "$1" --provider "$provider" --amount 1 --timeout 86400 --json 2>"$tmp/err") ||
    fail "deposit: $(cat "$tmp/err")"
  jget "$dep" "['channel']"
}
ch=$(channel_of "$C")
ch2=$(channel_of "$C2")
redeemed() {  # redeemed CHANNEL [DATA_DIR]: the channel's redeemed amount on chain, in wei
  "$bin" wallet channels --data-dir "${2:-$C}" --json | "$py" -c "
import decimal, json, sys
print(int(decimal.Decimal([c for c in json.load(sys.stdin) if c['channel'] == sys.argv[1]][0]['redeemed']) * 10**18))" "$1"
}
sums() {  # sums DIR KEY: the ledger's settled entries and wei for KEY (earned_wei | paid_wei)
  "$bin" ledger balance --data-dir "$1" --json | "$py" -c "
import json, sys; rows = json.load(sys.stdin); k = sys.argv[1]
print(sum(r['settled_jobs'] for r in rows if int(r[k]) > 0), sum(int(r[k]) for r in rows))" "$2"
}

"$bin" offer --listen 127.0.0.1:0 --device cpu --data-dir "$P" --json --price 0.001 --redeem-threshold 0.9 \
  >"$tmp/p.log" 2>"$tmp/p.err" &
ppid=$!
pids+=("$ppid")
purl=""
for _ in $(seq 1 200); do
  purl=$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/p.log" | head -1)
  [ -n "$purl" ] && break
  kill -0 "$ppid" 2>/dev/null || break
  sleep 0.05
done
[ -n "$purl" ] || fail "the provider did not start: $(cat "$tmp/p.err")"

# ---- a paid answer: labelled "chain", both ledgers and the payment agree ----
XDG_DATA_HOME="$tmp/client" "$bin" generate "$model" --peer "$purl" --prompt "Once upon a time" --max-tokens 60 --json \
  >"$tmp/gen.json" 2>"$tmp/gen.err" || fail "a paid generate failed: $(cat "$tmp/gen.err")"
read -r ntok paid tps < <("$py" - "$tmp/gen.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
pays = d["payments"]
assert len(pays) == 1 and pays[0]["settlement"] == "chain" and pays[0]["paid"], pays
assert int(pays[0]["paid_wei"]) > 0, pays
print(d["generated_tokens"], pays[0]["paid_wei"], round(d["decode_tokens_per_s"], 1))
PY
) || fail "generate --json does not label a chain payment: $(cat "$tmp/gen.json")"
grep -q "settled on chain, $paid wei" "$tmp/gen.err" || fail "generate does not say the tokens were settled on chain: $(cat "$tmp/gen.err")"
echo "generated $ntok tokens at $tps tokens/s, paid $paid wei on chain"
read -r cjobs cwei < <(sums "$C" paid_wei)
[ "$cjobs" = 1 ] && [ "$cwei" = "$paid" ] || fail "the client ledger holds $cjobs settled entries, $cwei wei; paid $paid"
for _ in $(seq 1 50); do
  read -r pjobs pwei < <(sums "$P" earned_wei)
  [ "$pjobs" = 1 ] && break
  sleep 0.1
done
[ "$pjobs" = 1 ] && [ "$pwei" = "$paid" ] || fail "the provider ledger holds $pjobs settled entries, $pwei wei; the client paid $paid"
"$bin" ledger show --data-dir "$P" --json | "$py" -c "
import json, sys
rs = [r for r in json.load(sys.stdin) if r['kind'] == 'generation']
assert len(rs) == 1 and rs[0].get('voucher'), rs
assert rs[0]['generated_tokens'] == int(sys.argv[1]), rs" "$ntok" ||
  fail "the provider's generation entry does not carry the session's voucher"
"$bin" ledger verify --data-dir "$P" >/dev/null || fail "the provider's ledger does not verify"

# ---- a price limit in wei below the bid: no provider ----
XDG_DATA_HOME="$tmp/client" "$bin" generate "$model" --peer "$purl" --prompt "Hi" --max-tokens 4 --max-price-generated 1000wei \
  >"$tmp/cheap.out" 2>"$tmp/cheap.err" && fail "a limit below the bid was accepted"
grep -q "limit" "$tmp/cheap.err" || fail "the refusal does not name the limit: $(cat "$tmp/cheap.err")"

# ---- a client that stops paying after the prompt is cut off within the credit ----
XDG_DATA_HOME="$tmp/unpaid" "$faulty" gen-unpaid generate "$model" --peer "$purl" --prompt "Once upon a time" --max-tokens 100 \
  --timeout 30 --json >"$tmp/unpaid.json" 2>"$tmp/unpaid.err" && fail "a client that does not pay got a whole answer"
grep -q "payment" "$tmp/unpaid.err" || fail "the unpaid client was not told about payment: $(cat "$tmp/unpaid.err")"
cut=$(grep -o "paid for [0-9]* of the [0-9]* tokens generated" "$tmp/p.err" | head -1)
[ -n "$cut" ] || fail "the provider did not cut the client off for payment: $(tail -5 "$tmp/p.err")"
made=$(echo "$cut" | awk '{print $6}')
[ "$made" -le 32 ] || fail "the provider generated $made tokens for a client that paid none (credit: 32)"
echo "cut off an unpaying client after $made unpaid tokens ($cut)"

# ---- drain redeems: on chain, the channel holds what the client paid ----
kill -TERM "$ppid"; wait "$ppid" 2>/dev/null
got=$(redeemed "$ch")
[ "$got" = "$paid" ] || fail "channel $ch has $got wei redeemed, not the $paid the client paid: $(tail -5 "$tmp/p.err")"
# The unpaying client's channel: the provider redeemed the prompt's voucher, the one it got;
# the vouchers the client signed and never sent are not redeemable by anyone.
got2=$(redeemed "$ch2" "$C2")
signed2=$(cut -d' ' -f1 "$C2"/payments/*.state)
[ "$got2" -gt 0 ] && [ "$got2" -lt "$signed2" ] ||
  fail "the unpaying client's channel has $got2 wei redeemed (it signed $signed2 and sent only the prompt's voucher)"
echo "PASS: generation paid per token ($paid wei for $ntok tokens, redeemed on chain); an unpaying client cut off"
