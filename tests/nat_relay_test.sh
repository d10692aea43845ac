#!/usr/bin/env bash
# Providers behind NAT, served through relays. Network namespaces: a public network (a bridge)
# with three relays (R1, R2 and a tampering R3) and the client; two providers, A and B, each on
# a private network behind its own NAT router (iptables MASQUERADE), so they can dial out but
# nobody can dial in. Checks: each provider finds it is behind NAT and announces a relayed
# address; jobs run through a relay with results equal to --local and receipts in the ledgers;
# a relay killed mid-job -> the job completes through the other relay, and the provider moves to
# its other relay and re-announces; a relay that alters bytes is caught by the end-to-end MAC
# and the job goes elsewhere; a circuit to a node that is not attached is refused at once.
# Needs root (CAP_NET_ADMIN) and iptables with nat support: skipped (exit 77) with a message
# otherwise.
# Usage: tests/nat_relay_test.sh path/to/gpugrid path/to/source
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$2"
faulty="$(dirname "$bin")/gpugrid-faulty"
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip)"
command -v iptables >/dev/null || skip "needs iptables (Debian package iptables) for the NAT routers"
[ -x "$faulty" ] || skip "needs the gpugrid-faulty test binary beside gpugrid (built with the tests)"

tag="gn$$"
tmp="$(mktemp -d)"
pids=()
spaces=(sw r1 r2 r3 cl nata natb a b)
source "$src/tests/lib/netns.sh"
trap netns_cleanup EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS

# ---- the networks
netns_create || skip "$netns_error"
# public: R1 .1, R2 .2, R3 .3, client .9, NAT routers .11 and .12 on 10.88.0.0/24
for h in r1:1 r2:2 r3:3 cl:9 nata:11 natb:12; do
  netns_public "${h%%:*}" "10.88.0.${h##*:}" || skip "$netns_error"
done
# private: A 10.1.0.2 behind nata (10.1.0.1), B 10.2.0.2 behind natb (10.2.0.1)
netns_private a nata 10.1.0 || skip "$netns_error"
netns_private b natb 10.2.0 || skip "$netns_error"
# A reaches the public network (through its NAT); the public network cannot reach A.
out="$(nsx a timeout 5 bash -c 'exec 3<>/dev/tcp/10.88.0.1/9' 2>&1)"
[[ "$out" == *refused* ]] || skip "the private network cannot reach the public one through NAT: $out"
out="$(nsx cl timeout 2 bash -c 'exec 3<>/dev/tcp/10.1.0.2/9' 2>&1)"
[[ "$out" != *refused* ]] || skip "the NAT lets the public network in: $out"

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"
"$bin" run "$model" "$sample" --local -o "$tmp/local.npy" || { echo "FAIL: --local run failed" >&2; exit 1; }

# start NS NAME PROGRAM ARGS...: an offer process in NS with data dir $tmp/NAME, JSON events
# in $tmp/NAME.log; sets pid_NAME.
start() {
  local ns="$1" name="$2"
  shift 2
  ip netns exec "$tag-$ns" "$@" --data-dir "$tmp/$name" --json >"$tmp/$name.log" 2>"$tmp/$name.err" &
  pids+=("$!")
  printf -v "pid_$name" '%s' "$!"
}
wait_for() {  # wait_for FILE PATTERN SECONDS
  for _ in $(seq 1 $(($3 * 20))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
id_of() { sed -n 's/.*"event":"listening".*"node_id":"\([^"]*\)".*/\1/p' "$tmp/$1.log" | head -1; }

# Relays price their own compute high, so jobs go to the providers behind them.
start r1 r1 "$bin" offer --listen 0.0.0.0:7447 --relay --price 1
start r2 r2 "$bin" offer --listen 0.0.0.0:7447 --relay --price 1 --relay-max-circuits 64 --relay-max-bandwidth 50M
start r3 r3 "$faulty" tamper-relay offer --listen 0.0.0.0:7447 --relay --price 1
for r in r1 r2 r3; do wait_for "$tmp/$r.log" '"event":"listening"' 5 || fail "relay $r did not start: $(cat "$tmp/$r.err")"; done
# A is slow (each job waits 2 s first) so that a relay can be killed under a running job.
export GPUGRID_FAULTY_DELAY_MS=2000
start a a "$faulty" slow offer --listen 0.0.0.0:7447 --price 0.0001 \
  --via-relay ws://10.88.0.1:7447 --via-relay ws://10.88.0.2:7447 --via-relay ws://10.88.0.3:7447
# B names no relay: it picks relays among its peers that announce relay service (R2, its
# bootstrap peer, first).
start b b "$bin" offer --listen 0.0.0.0:7447 --price 0.001 --peer ws://10.88.0.2:7447
for p in a b; do
  wait_for "$tmp/$p.log" '"event":"behind_nat"' 10 || fail "provider $p did not find itself behind NAT: $(cat "$tmp/$p.log" "$tmp/$p.err")"
done
grep -q '"event":"unreachable"' "$tmp/a.log" || fail "provider a logged no dial-back result"
id_a="$(id_of a)"
id_b="$(id_of b)"
via_r1="ws://10.88.0.1:7447/relay/$id_a"
via_r3="ws://10.88.0.3:7447/relay/$id_a"
via_r2_b="ws://10.88.0.2:7447/relay/$id_b"
# A is attached to all three relays; each accepted it.
for r in r1 r2 r3; do
  wait_for "$tmp/$r.log" "\"event\":\"relay_attached\",\"node_id\":\"$id_a\"" 5 || fail "relay $r did not attach provider a"
done
wait_for "$tmp/r2.log" "\"event\":\"relay_attached\",\"node_id\":\"$id_b\"" 5 || fail "provider b did not pick relay r2"
# The plain text form says it in words.
nsx a "$bin" offer --listen 0.0.0.0:7448 --data-dir "$tmp/a2" --via-relay ws://10.88.0.1:7447 >/dev/null 2>"$tmp/a2.err" &
pids+=("$!")
pid_a2=$!
wait_for "$tmp/a2.err" "behind NAT: serving through relay ws://10.88.0.1:7447 at ws://10.88.0.1:7447/relay/" 10 ||
  fail "offer did not say it serves through a relay: $(cat "$tmp/a2.err")"
kill "$pid_a2" 2>/dev/null
wait "$pid_a2" 2>/dev/null
# The relays dial nobody, so none of them is asked; a public provider dialing R1 is found
# reachable:
start cl pub "$bin" offer --listen 0.0.0.0:7449 --price 1 --peer ws://10.88.0.1:7447
wait_for "$tmp/pub.log" '"event":"reachable","url":"ws://10.88.0.9:7449"' 10 || fail "a public provider was not found reachable: $(cat "$tmp/pub.log")"

# 1. A job through relay R1 to A: the right result, and a receipt on both sides.
nsx cl "$bin" run "$model" "$sample" --peer "$via_r1" --data-dir "$tmp/client" -o "$tmp/r1.npy" --json \
  >"$tmp/run1.out" 2>"$tmp/run1.err"
code=$?
[ "$code" -eq 0 ] || fail "run through relay r1 exited $code: $(cat "$tmp/run1.err")"
cmp -s "$tmp/local.npy" "$tmp/r1.npy" || fail "run through relay r1 differs from --local"
grep -q "$id_a" "$tmp/run1.out" || fail "run through relay r1 was not served by provider a: $(cat "$tmp/run1.out")"
"$bin" ledger verify --data-dir "$tmp/client" >/dev/null 2>&1 || fail "client ledger does not verify"
"$bin" ledger show --data-dir "$tmp/client" --json 2>/dev/null | grep -q "$id_a" ||
  fail "the client's ledger has no receipt with provider a"
job1="$(sed -n 's/.*"job_done","job":"\([0-9a-f]*\)".*/\1/p' "$tmp/a.log" | head -1)"
[ -n "$job1" ] || fail "provider a logged no finished job"
for _ in $(seq 1 40); do
  "$bin" ledger show --data-dir "$tmp/a" --json 2>/dev/null | grep -q "$job1" && break
  sleep 0.05
done
"$bin" ledger show --data-dir "$tmp/a" --json 2>/dev/null | grep -q "$job1" ||
  fail "provider a's ledger has no receipt for job $job1"

# 2. R1 dies while A runs the job: the client fails over to B (through R2), and A moves to
#    another relay and announces it.
nsx cl "$bin" run "$model" "$sample" --peer "$via_r1" --peer "$via_r2_b" --data-dir "$tmp/client" \
  -o "$tmp/r2.npy" --json --timeout 20 >"$tmp/run2.out" 2>"$tmp/run2.err" &
run_pid=$!
running=0
for _ in $(seq 1 200); do
  n="$(nsx a curl -s --max-time 1 http://127.0.0.1:7447/metrics | awk '$1 == "gpugrid_jobs_in_flight" { print $2 }')"
  [ "${n:-0}" != "0" ] && { running=1; break; }
  sleep 0.05
done
[ "$running" -eq 1 ] || fail "provider a never ran the second job"
kill -9 "$pid_r1"
wait "$pid_r1" 2>/dev/null
wait "$run_pid"
code=$?
[ "$code" -eq 0 ] || fail "the run whose relay died exited $code: $(cat "$tmp/run2.err")"
cmp -s "$tmp/local.npy" "$tmp/r2.npy" || fail "the run whose relay died differs from --local"
grep -q "$id_b" "$tmp/run2.out" || fail "the run whose relay died was not completed by provider b: $(cat "$tmp/run2.out")"
wait_for "$tmp/a.log" '"event":"relay_down"' 5 || fail "provider a did not notice relay r1 die"
wait_for "$tmp/a.log" '"event":"behind_nat","relay":"ws://10.88.0.[23]:7447"' 5 ||
  fail "provider a did not re-announce itself at another relay: $(cat "$tmp/a.log")"

# 3. The tampering relay R3: the altered frame fails A's session MAC, and the job goes to B.
nsx cl "$bin" run "$model" "$sample" --peer "$via_r3" --peer "$via_r2_b" --data-dir "$tmp/client3" \
  -o "$tmp/r3.npy" --json >"$tmp/run3.out" 2>"$tmp/run3.err"
code=$?
[ "$code" -eq 0 ] || fail "the run past a tampering relay exited $code: $(cat "$tmp/run3.err")"
cmp -s "$tmp/local.npy" "$tmp/r3.npy" || fail "the run past a tampering relay differs from --local"
# Served by B through R2, or by A at the relayed address it also holds at R2 (the client may
# learn it by gossip first): either way not through R3, whose altered frames would have failed.
grep -q "$id_b\|$id_a" "$tmp/run3.out" || fail "the run past a tampering relay names neither provider: $(cat "$tmp/run3.out")"
rejected="$(nsx a curl -s --max-time 1 http://127.0.0.1:7447/metrics | awk '$1 == "gpugrid_frames_rejected_total" { print $2 }')"
[ "${rejected:-0}" != "0" ] || fail "provider a did not reject the tampered frames"

# 4. A relay asked for a node that is not attached refuses at once, and says why.
start_s=$(date +%s%N)
nsx cl "$bin" run "$model" "$sample" --peer "ws://10.88.0.2:7447/relay/gg$(printf 'a%.0s' $(seq 1 32))" \
  --data-dir "$tmp/client4" --max-price 0.01 >/dev/null 2>"$tmp/run4.err"
code=$?
[ "$code" -ne 0 ] || fail "a run through a relay that does not carry the node succeeded"
grep -q "not attached" "$tmp/run4.err" || fail "the refusal does not say the node is not attached: $(cat "$tmp/run4.err")"

if [ "$failures" -gt 0 ]; then
  for f in a b r1 r2 r3; do echo "--- $f" >&2; tail -5 "$tmp/$f.err" >&2; done
  [ -n "${NAT_RELAY_TEST_KEEP:-}" ] && cp -r "$tmp" "$NAT_RELAY_TEST_KEEP"
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "providers behind NAT through relays: all checks passed"
