#!/usr/bin/env bash
# Ledger anchoring on a local EVM dev chain (tests/tools/devchain.py):
#   offer --anchor-every 2 serves jobs from `run`; its first anchor meets a failing endpoint
#   and is retried; the anchors land (and the last entries are anchored when it stops); ledger
#   verify --chain passes; ledger anchor anchors the head at once. Then the provider's ledger is
#   tampered with: one entry dropped and the chain of hashes recomputed (plain verify still
#   passes, verify --chain names the anchor), the file cut below an anchor (a lost tail), and the
#   chain taken down (one line, exit 5). Bad flags and a missing chain are one-line errors.
# Usage: chain_anchor_test.sh GPUGRID_BINARY SOURCE_DIR
# Exit: 0 pass; 1 fail; 77 skipped (no Python test environment with eth-tester).
source "$2/tests/lib/loopback_grid.sh" "$@"
src=$(cd "$src" && pwd)
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
if ! "$py" -c "import eth_tester, eth_account" >/dev/null 2>&1; then
  echo "skipped: $py lacks eth-tester/eth-account (run scripts/python_env.sh)"
  exit 77
fi
die() { echo "FAIL: $*" >&2; exit 1; }

"$py" "$src/tests/tools/devchain.py" --port 0 --ready "$tmp/ready" 2>"$tmp/chain.log" &
chain_pid=$!
pids+=("$chain_pid")
for _ in $(seq 1 480); do [ -f "$tmp/ready" ] && break; alive "$chain_pid" || break; sleep 0.25; done
[ -f "$tmp/ready" ] || { cat "$tmp/chain.log"; die "the dev chain did not start"; }
field() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$tmp/ready" "$1"; }
url=$(field url); contract=$(field contract)
rpc() {  # rpc METHOD PARAMS_JSON
  "$py" - "$url" "$1" "$2" <<'PY'
import json, sys, urllib.request
url, method, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
req = urllib.request.Request(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
                             {"Content-Type": "application/json"})
print(json.dumps(json.loads(urllib.request.urlopen(req).read())["result"]))
PY
}
jget() { "$py" -c "import json,sys; d=json.loads(sys.argv[1]); print(eval('d'+sys.argv[2]))" "$1" "$2"; }
# expect RC TEXT CMD...: exit code RC and one line on stderr containing TEXT
expect() {
  local want_rc=$1 text=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  [ $rc = "$want_rc" ] || fail "$* exited $rc, not $want_rc: $(cat "$tmp/err")"
  grep -q -- "$text" "$tmp/err" || fail "$* said '$(cat "$tmp/err")', not '$text'"
  [ "$(grep -vc "^gpugrid: sent transaction" "$tmp/err")" -le 1 ] || fail "$* printed more than one error line: $(cat "$tmp/err")"
}

P="$tmp/p" C="$tmp/c"
provider=$(jget "$("$bin" wallet show --data-dir "$P" --json 2>/dev/null)" "['address']") || die "wallet show"
client=$(jget "$("$bin" wallet show --data-dir "$C" --json 2>/dev/null)" "['address']") || die "wallet show (client)"
rpc dev_fund "[\"$provider\", \"0xde0b6b3a7640000\"]" >/dev/null   # 1 ETH for gas
rpc dev_fund "[\"$client\", \"0xde0b6b3a7640000\"]" >/dev/null     # 1 ETH: a deposit and gas

# ---- bad input before anything runs ----
expect 2 "needs a chain" "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/nochain" --anchor-every 2
expect 2 "is not a duration" "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/nochain" --anchor-interval 5x
expect 2 "no chain endpoint" "$bin" ledger verify --chain --data-dir "$P"
expect 2 "applies to 'ledger verify'" "$bin" ledger show --chain --data-dir "$P"
expect 2 "apply to 'ledger anchor'" "$bin" ledger verify --address 0x0000000000000000000000000000000000000001 --data-dir "$P"

export GPUGRID_CHAIN_RPC="$url" GPUGRID_CHAIN_CONTRACT="$contract"
expect 2 "is empty: nothing to anchor" "$bin" ledger anchor --data-dir "$P"
# A provider with a chain is paid on it: the client pays every job with a voucher, and the
# ledger's entries carry them (the anchors cover those entries like any others).
"$bin" wallet deposit --data-dir "$C" --provider "$provider" --amount 0.1 --timeout 86400 >/dev/null 2>"$tmp/err" ||
  die "deposit: $(cat "$tmp/err")"

# ---- offer anchors every 2 entries; its first try meets a failing endpoint and is retried ----
# Only the anchorer estimates gas here (vouchers are off-chain; nothing reaches the redeem
# threshold): its first call and its two retries fail.
rpc dev_fault '["http500", 3, "eth_estimateGas"]' >/dev/null
start_provider p --anchor-every 2 || die "offer did not start"
jobs=0
run_jobs() {
  for _ in $(seq 1 "$1"); do
    jobs=$((jobs + 1))
    "$bin" run "$model" "$sample" --peer "$url_p" --data-dir "$C" >"$tmp/run$jobs.out" 2>"$tmp/run$jobs.err" </dev/null ||
      die "run $jobs: $(cat "$tmp/run$jobs.err")"
  done
}
anchored() { grep -c '"event":"anchored"' "$tmp/p.log"; }
grep -q "\"event\":\"anchoring\",\"address\":\"$provider\".*\"every\":2" "$tmp/p.log" || fail "offer did not announce anchoring: $(head -3 "$tmp/p.log")"
run_jobs 3
for _ in $(seq 1 200); do [ "$(anchored)" -ge 1 ] && break; sleep 0.05; done
grep -q '"event":"anchor_failed".*HTTP 500' "$tmp/p.log" || fail "the failing endpoint did not fail an anchor: $(grep anchor "$tmp/p.log")"
[ "$(anchored)" -ge 1 ] || die "the failed anchor was not retried: $(grep anchor "$tmp/p.log")"
run_jobs 3
for _ in $(seq 1 200); do [ "$(anchored)" -ge 2 ] && break; sleep 0.05; done
[ "$(anchored)" -ge 2 ] || die "no anchor after 2 more entries: $(grep anchor "$tmp/p.log")"
run_jobs 1  # left for the anchor on the way out, unless the schedule takes it first
kill -TERM "$pid_p"; wait "$pid_p"; rc=$?
[ $rc = 0 ] || fail "offer exited $rc"
entries=$(jget "$("$bin" ledger verify --data-dir "$P" --json)" "['entries']")
[ "$entries" = "$jobs" ] || fail "the provider's ledger has $entries entries, not $jobs"
last=$(grep '"event":"anchored"' "$tmp/p.log" | tail -1)
[[ "$last" == *"\"sequence\":$((entries - 1)),"* ]] || fail "the last entry was not anchored on the way out: $last"
grep -q '"event":"anchor_sent".*"tx":"0x' "$tmp/p.log" || fail "no anchor_sent event with a tx hash"

out=$("$bin" ledger verify --chain --data-dir "$P") || fail "verify --chain of an untouched ledger failed: $out"
[[ "$out" == *"chain OK: all "*" anchors by $provider match"* ]] || fail "verify --chain said: $out"
v=$("$bin" ledger verify --chain --data-dir "$P" --json)
[ "$(jget "$v" "['ok']")" = True ] && [ "$(jget "$v" "['chain']['mismatched']")" = 0 ] &&
  [ "$(jget "$v" "['chain']['unanchored_entries']")" = 0 ] || fail "verify --chain --json: $v"
n_anchors=$(jget "$v" "['chain']['anchors']")
[ "$n_anchors" -ge 2 ] || fail "only $n_anchors anchors on chain: $v"
shown=$("$bin" ledger show --anchors --data-dir "$P" --json)
[ "$(jget "$shown" "[0]['state']")" = mined ] || fail "ledger show --anchors: $shown"
grep -q "	failed	" "$P/anchors.tsv" || fail "the failed anchor is not in anchors.tsv"
[ "$(grep -c "	mined	" "$P/anchors.tsv")" = "$n_anchors" ] || fail "anchors.tsv and the chain disagree: $(cat "$P/anchors.tsv")"

now=$("$bin" ledger anchor --data-dir "$P" --json 2>"$tmp/err") || fail "ledger anchor: $(cat "$tmp/err")"
[ "$(jget "$now" "['sequence']")" = $((entries - 1)) ] || fail "ledger anchor: $now"
grep -q "^gpugrid: sent transaction 0x" "$tmp/err" || fail "ledger anchor did not print its tx hash when sent"
# Someone else's copy, checked against this wallet's anchors.
cp -r "$P" "$tmp/copy" && rm "$tmp/copy/wallet.key"
"$bin" ledger verify --chain --data-dir "$tmp/copy" --address "$provider" >/dev/null || fail "verify --chain --address of a copy"
expect 2 "no wallet key" "$bin" ledger verify --chain --data-dir "$tmp/copy"
# An anchor this node recorded as mined that the chain does not show: a warning.
cp "$P/anchors.tsv" "$tmp/anchors.orig"
printf '1\tmined\t0\t0x%s\t0x%s\t7\t-\n' "$(printf '1%.0s' $(seq 64))" "$(printf '2%.0s' $(seq 64))" >>"$P/anchors.tsv"
"$bin" ledger verify --chain --data-dir "$P" >/dev/null 2>"$tmp/err" || fail "verify --chain with an extra local record: $(cat "$tmp/err")"
grep -q "1 anchor recorded as mined is not on chain .*tx 0x2222" "$tmp/err" || fail "no warning about an anchor missing on chain: $(cat "$tmp/err")"
cp "$tmp/anchors.orig" "$P/anchors.tsv"

# ---- tampering: drop one entry and recompute every link and hash ----
cp "$P/ledger.log" "$tmp/ledger.orig"
rewrite() {  # rewrite FILE drop|cut N: drop entry N (relinking the rest), or keep the first N
  "$py" - "$@" <<'PY'
import hashlib, struct, sys
path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data, recs, off = open(path, "rb").read(), [], 0
while off < len(data):
    (size,) = struct.unpack_from("<I", data, off)
    recs.append(data[off + 4:off + 4 + size])
    off += 4 + size + 32
recs = recs[:n] if mode == "cut" else recs[:n] + recs[n + 1:]
out, prev = b"", bytes(32)
for i, e in enumerate(recs):  # entry bytes: magic(8) index(8) previous hash(32) receipt
    e = e[:8] + struct.pack("<Q", i) + prev + e[48:]
    prev = hashlib.blake2b(e, digest_size=32).digest()
    out += struct.pack("<I", len(e)) + e + prev
open(path, "wb").write(out)
PY
}
rewrite "$P/ledger.log" drop 1
"$bin" ledger verify --data-dir "$P" >/dev/null 2>"$tmp/err" || fail "the relinked ledger should pass plain verify: $(cat "$tmp/err")"
first=$(grep '"event":"anchored"' "$tmp/p.log" | head -1 | sed 's/.*"sequence":\([0-9]*\).*/\1/')
expect 1 "the anchor in block [0-9]* (tx 0x[0-9a-f]*) says entry $first hashes to" "$bin" ledger verify --chain --data-dir "$P"
grep -q "was changed" "$tmp/err" || fail "verify --chain did not say the ledger was changed: $(cat "$tmp/err")"
v=$("$bin" ledger verify --chain --data-dir "$P" --json 2>/dev/null)
[ "$(jget "$v" "['ok']")" = False ] && [ "$(jget "$v" "['chain']['first_bad']['sequence']")" = "$first" ] || fail "tampered --json: $v"

# ---- a lost tail: cut below the anchors ----
cp "$tmp/ledger.orig" "$P/ledger.log"
rewrite "$P/ledger.log" cut "$first"
"$bin" ledger verify --data-dir "$P" >/dev/null 2>&1 || fail "the cut ledger should pass plain verify"
expect 1 "is for entry $first, but the ledger ends at entry $((first - 1))" "$bin" ledger verify --chain --data-dir "$P"
grep -q "tail" "$tmp/err" || fail "verify --chain did not call it a lost tail: $(cat "$tmp/err")"
cp "$tmp/ledger.orig" "$P/ledger.log"
"$bin" ledger verify --chain --data-dir "$P" >/dev/null 2>&1 || fail "the restored ledger fails verify --chain"

# ---- the chain down ----
kill "$chain_pid"; wait "$chain_pid" 2>/dev/null
expect 5 "cannot read the anchors on chain" "$bin" ledger verify --chain --data-dir "$P"
expect 1 "anchoring entry" "$bin" ledger anchor --data-dir "$P"
[ "$failures" = 0 ] || exit 1
echo "chain_anchor_test: ok"
