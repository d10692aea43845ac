#!/usr/bin/env bash
# End to end on a local EVM dev chain (tests/tools/devchain.py: py-evm behind a JSON-RPC shim
# on a loopback port, with the payment-channel contract deployed):
#   wallet show/new (key file 0600), balance, deposit (open a channel) -> voucher signed in C++
#   -> redeem by the provider (accepted by the contract) -> balances; double redeem, forged,
#   cross-channel and cross-chain vouchers refused; withdraw refused before the timeout and
#   paid after it; a dead, slow, lying or garbling endpoint, a gas price over the limit and bad
#   flags give one-line errors with the documented exit codes.
# Usage: chain_wallet_test.sh GPUGRID_BINARY SOURCE_DIR
# Exit: 0 pass; 1 fail; 77 skipped (no Python test environment with eth-tester).
set -uo pipefail
bin=${1:?usage: chain_wallet_test.sh GPUGRID_BINARY SOURCE_DIR}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if ! "$py" -c "import eth_tester, eth_account" >/dev/null 2>&1; then
  echo "skipped: $py lacks eth-tester/eth-account (run scripts/python_env.sh)"
  exit 77
fi

tmp=$(mktemp -d)
chain_pid=""
cleanup() {
  [ -n "$chain_pid" ] && kill "$chain_pid" 2>/dev/null && wait "$chain_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$py" "$src/tests/tools/devchain.py" --port 0 --ready "$tmp/ready" 2>"$tmp/chain.log" &
chain_pid=$!
for _ in $(seq 1 480); do [ -f "$tmp/ready" ] && break; kill -0 "$chain_pid" 2>/dev/null || break; sleep 0.25; done
[ -f "$tmp/ready" ] || { cat "$tmp/chain.log"; fail "the dev chain did not start"; }
field() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$tmp/ready" "$1"; }
url=$(field url); contract=$(field contract); chain_id=$(field chain_id)

rpc() {  # rpc METHOD PARAMS_JSON -> result JSON
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
C="$tmp/client" P="$tmp/provider"
w() { "$bin" wallet "$@"; }

# ---- keys ----
client=$(jget "$(w show --data-dir "$C" --json 2>/dev/null)" "['address']") || fail "wallet show"
provider=$(jget "$(w show --data-dir "$P" --json 2>/dev/null)" "['address']") || fail "wallet show (provider)"
[ "$(stat -c %a "$C/wallet.key")" = 600 ] || fail "wallet.key is not mode 0600"
again=$(jget "$(w show --data-dir "$C" --json 2>/dev/null)" "['address']")
[ "$again" = "$client" ] || fail "wallet show changed the address"
chmod 644 "$C/wallet.key"
out=$(w show --data-dir "$C" 2>&1); rc=$?
[ $rc = 2 ] && [[ "$out" == *"chmod 600"* ]] || fail "a group-readable key was accepted (rc $rc: $out)"
chmod 600 "$C/wallet.key"
tmpnew="$tmp/rot"; w show --data-dir "$tmpnew" >/dev/null 2>&1
first=$(jget "$(w show --data-dir "$tmpnew" --json 2>/dev/null)" "['address']")
second=$(jget "$(w new --data-dir "$tmpnew" --json 2>/dev/null)" "['address']")
[ "$first" != "$second" ] && ls "$tmpnew"/wallet.key.old-* >/dev/null 2>&1 || fail "wallet new did not rotate and keep the old key"

# ---- funds ----
rpc dev_fund "[\"$client\", \"0x8ac7230489e80000\"]" >/dev/null    # 10 ETH
rpc dev_fund "[\"$provider\", \"0xde0b6b3a7640000\"]" >/dev/null   # 1 ETH for gas
bal=$(jget "$(w balance --data-dir "$C" --json)" "['balance']")
[ "$bal" = 10 ] || fail "client balance is $bal, not 10"

# ---- deposit -> vouchers -> redeem ----
dep=$(w deposit --data-dir "$C" --provider "$provider" --amount 1 --timeout 600 --json 2>"$tmp/err") || { cat "$tmp/err"; fail "deposit"; }
ch=$(jget "$dep" "['channel']")
[ "$(jget "$dep" "['deposit']")" = 1 ] || fail "deposit is not 1: $dep"
grep -q "sent transaction 0x" "$tmp/err" || fail "deposit did not report its transaction hash"
w voucher --data-dir "$C" --channel "$ch" --amount 0.1 --nonce 1 > "$tmp/v1.json" || fail "voucher 1"
w voucher --data-dir "$C" --channel "$ch" --amount 0.3 --nonce 2 > "$tmp/v2.json" || fail "voucher 2"
pbefore=$(jget "$(w balance --data-dir "$P" --json)" "['balance_wei']")
r1=$(w redeem --data-dir "$P" --voucher "$tmp/v1.json" --json 2>/dev/null) || fail "redeem of voucher 1"
[ "$(jget "$r1" "['paid']")" = 0.1 ] || fail "redeem 1 paid $(jget "$r1" "['paid']")"
r2=$(w redeem --data-dir "$P" --voucher - --json < "$tmp/v2.json" 2>/dev/null) || fail "redeem of voucher 2"
[ "$(jget "$r2" "['paid']")" = 0.2 ] || fail "redeem 2 paid $(jget "$r2" "['paid']")"
gas=$(( $(jget "$r1" "['gas_used']") + $(jget "$r2" "['gas_used']") ))
echo "redeem gas: $(jget "$r1" "['gas_used']") and $(jget "$r2" "['gas_used']")"
pafter=$(jget "$(w balance --data-dir "$P" --json)" "['balance_wei']")
"$py" -c "
import sys; b, a, gas = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
got = a - b; want = 3 * 10**17
assert want - gas * 10**11 < got <= want, (got, want)" "$pbefore" "$pafter" "$gas" || fail "provider balance moved by the wrong amount"
state=$(w channels --data-dir "$C" --json)
[ "$(jget "$state" "[0]['redeemed']")" = 0.3 ] && [ "$(jget "$state" "[0]['nonce']")" = 2 ] || fail "channel state: $state"
pstate=$(w channels --data-dir "$P" --json)
[ "$(jget "$pstate" "[0]['client']")" = "$client" ] || fail "the provider does not see the channel: $pstate"

expect() {  # expect RC TEXT CMD...: exit code RC and one line on stderr containing TEXT
  local want_rc=$1 text=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  [ $rc = "$want_rc" ] || fail "$* exited $rc, not $want_rc: $(cat "$tmp/err")"
  grep -q -- "$text" "$tmp/err" || fail "$* said '$(cat "$tmp/err")', not '$text'"
  # one error line (a "sent transaction HASH" note may come before it)
  [ "$(grep -vc "^gpugrid: sent transaction" "$tmp/err")" -le 1 ] || fail "$* printed more than one error line: $(cat "$tmp/err")"
}
expect 2 "already redeemed" w redeem --data-dir "$P" --voucher "$tmp/v1.json"
expect 2 "already redeemed" w redeem --data-dir "$P" --voucher "$tmp/v2.json"
sed 's/"amount":"300000000000000000"/"amount":"900000000000000000"/' "$tmp/v2.json" > "$tmp/forged.json"
w voucher --data-dir "$C" --channel "$ch" --amount 0.5 --nonce 3 > "$tmp/v3.json"
sed "s/\"nonce\":\"3\"/\"nonce\":\"4\"/" "$tmp/v3.json" > "$tmp/forged.json"
expect 2 "signed by" w redeem --data-dir "$P" --voucher "$tmp/forged.json"
dep2=$(w deposit --data-dir "$C" --provider "$provider" --amount 0.5 --timeout 600 --json 2>/dev/null) || fail "second deposit"
ch2=$(jget "$dep2" "['channel']")
sed "s/\"channel\":\"$ch\"/\"channel\":\"$ch2\"/" "$tmp/v3.json" > "$tmp/moved.json"
expect 2 "signed by" w redeem --data-dir "$P" --voucher "$tmp/moved.json"
sed "s/\"chain_id\":\"$chain_id\"/\"chain_id\":\"1\"/" "$tmp/v3.json" > "$tmp/otherchain.json"
expect 2 "is for chain 1" w redeem --data-dir "$P" --voucher "$tmp/otherchain.json"
expect 2 "above channel" w voucher --data-dir "$C" --channel "$ch" --amount 2
expect 2 "not this wallet" w voucher --data-dir "$P" --channel "$ch" --amount 0.1

# ---- two processes on one wallet at once: the nonce race is retried, both deposits land ----
w deposit --data-dir "$C" --provider "$provider" --amount 0.01 --timeout 600 >"$tmp/race1" 2>&1 &
race=$!
w deposit --data-dir "$C" --provider "$provider" --amount 0.01 --timeout 600 >"$tmp/race2" 2>&1 || fail "racing deposit 2: $(cat "$tmp/race2")"
wait $race || fail "racing deposit 1: $(cat "$tmp/race1")"

# ---- a receipt that does not come in time: one line with the hash, and nothing is lost ----
nch=$(jget "$(w channels --data-dir "$C" --json)" ".__len__()")
expect 1 "was sent but has no receipt with 2 confirmation" \
  w deposit --data-dir "$C" --provider "$provider" --amount 0.01 --confirmations 2 --wait 1
[ "$(jget "$(w channels --data-dir "$C" --json)" ".__len__()")" = $((nch + 1)) ] || fail "the late deposit is not on chain"

# ---- withdraw: refused before the timeout, the unredeemed rest after it ----
expect 2 "not expired" w withdraw --data-dir "$C" --channel "$ch"
rpc dev_increaseTime '[601]' >/dev/null
r3=$(w redeem --data-dir "$P" --voucher "$tmp/v3.json" --json 2>/dev/null) || fail "redeem after expiry, before withdraw"
[ "$(jget "$r3" "['paid']")" = 0.2 ] || fail "redeem 3 paid $(jget "$r3" "['paid']")"
wd=$(w withdraw --data-dir "$C" --channel "$ch" --json 2>/dev/null) || fail "withdraw after the timeout"
[ "$(jget "$wd" "['refund']")" = 0.5 ] || fail "refund is $(jget "$wd" "['refund']"), not 0.5"
expect 2 "closed" w withdraw --data-dir "$C" --channel "$ch"
state=$(w channels --data-dir "$C" --json)
[ "$(jget "$state" "[0]['closed']")" = True ] || fail "channel not closed: $state"

# ---- a bad endpoint, bad flags, the gas limit ----
expect 1 "connecting" w balance --data-dir "$C" --chain-rpc http://127.0.0.1:1 --rpc-timeout 2
expect 2 "serves chain id" w balance --data-dir "$C" --chain-id 1
rpc dev_fault '["wrong_chain", 1]' >/dev/null
expect 2 "serves chain id" w balance --data-dir "$C" --chain-id "$chain_id"
rpc dev_fault '["malformed", 3]' >/dev/null
expect 1 "not JSON" w balance --data-dir "$C"
rpc dev_fault '["malformed", 1]' >/dev/null
w balance --data-dir "$C" >/dev/null 2>&1 || fail "one malformed answer was not retried"
rpc dev_fault '["http500", 3]' >/dev/null
expect 1 "HTTP 500" w balance --data-dir "$C"
rpc dev_fault '["drop", 1]' >/dev/null
w balance --data-dir "$C" >/dev/null 2>&1 || fail "one dropped connection was not retried"
rpc dev_fault '["slow", 3]' >/dev/null
expect 1 "no answer within 500 ms" w balance --data-dir "$C" --rpc-timeout 0.5
sleep 2  # let the slow answers drain
expect 2 "above the limit" w deposit --data-dir "$C" --provider "$provider" --amount 0.1 --max-fee 0.000000001
typo=$("$py" -c "import sys; a = sys.argv[1]; i = next(i for i in range(2, 42) if a[i].isalpha()); print(a[:i] + a[i].swapcase() + a[i+1:])" "$provider")
expect 2 "checksum" w deposit --data-dir "$C" --provider "$typo" --amount 0.1
expect 2 "is not an amount" w deposit --data-dir "$C" --provider "$provider" --amount 1e18
expect 2 "not http" w balance --data-dir "$C" --chain-rpc ftp://x
expect 2 "no chain endpoint" env -u GPUGRID_CHAIN_RPC "$bin" wallet balance --data-dir "$C"
printf 'rpc = 5\n' > "$C/chain.toml"
expect 2 "chain.toml: rpc" env -u GPUGRID_CHAIN_RPC "$bin" wallet balance --data-dir "$C"
printf 'rpc = "%s"\ncontract = "%s"\nchain_id = %s\nfrom_block = 1\n' "$url" "$contract" "$chain_id" > "$C/chain.toml"
from_toml=$(env -u GPUGRID_CHAIN_RPC -u GPUGRID_CHAIN_CONTRACT "$bin" wallet channels --data-dir "$C" --json 2>/dev/null) || fail "chain.toml was not used"
[ "$(jget "$from_toml" ".__len__()")" = "$(jget "$(w channels --data-dir "$C" --json)" ".__len__()")" ] || fail "chain.toml: channels differ"
expect 2 "not a JSON object" w redeem --data-dir "$P" --voucher "$C/chain.toml"
echo "chain_wallet_test: ok"
