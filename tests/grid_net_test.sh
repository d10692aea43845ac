#!/usr/bin/env bash
# The grid over real processes on loopback: `gpugrid offer` providers found through one
# bootstrap peer, `gpugrid run --peer` jobs, model caching, failover after SIGKILL and after a
# stall, a corrupting provider caught by redundancy, receipts in both sides' ledgers, metrics.
# Usage: tests/grid_net_test.sh path/to/gpugrid path/to/source
source "$2/tests/lib/loopback_grid.sh" "$@"

# Misbehaving providers are a test double: gpugrid-faulty (built with the tests, beside gpugrid).
faulty="$(dirname "$bin")/gpugrid-faulty"
[ -x "$faulty" ] || { echo "SKIP: $faulty is not built (configure with -DGPUGRID_TESTS=ON)"; exit 77; }

# start_provider NAME [--fault FAULT] [ARGS...]: starts `gpugrid offer` (or, with --fault, the
# test double's) on a free loopback port; sets url_NAME, pid_NAME and port_NAME.
start_provider() {
  local name="$1"
  shift
  local cmd=("$bin")
  if [ "${1:-}" = "--fault" ]; then
    cmd=("$faulty" "$2")
    shift 2
  fi
  "${cmd[@]}" offer --listen 127.0.0.1:0 --data-dir "$tmp/$name" --json "$@" >"$tmp/$name.log" 2>"$tmp/$name.err" &
  local pid=$!
  pids+=("$pid")
  local url=""
  for _ in $(seq 1 100); do
    url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/$name.log" 2>/dev/null | head -1)"
    [ -n "$url" ] && break
    sleep 0.05
  done
  if [ -z "$url" ]; then
    fail "provider $name did not start: $(cat "$tmp/$name.err")"
    return 1
  fi
  printf -v "url_$name" '%s' "$url"
  printf -v "pid_$name" '%s' "$pid"
  printf -v "port_$name" '%s' "${url##*:}"
}

# alive PID: the process runs (a zombie does not count).


# wait_for_job NAME: waits up to 5 s until the provider holds a job; fails otherwise.
wait_for_job() {
  local n
  for _ in $(seq 1 100); do
    n="$(metric "$1" gpugrid_jobs_in_flight 2>/dev/null)"
    [ "${n:-0}" -ge 1 ] && return 0
    sleep 0.05
  done
  return 1
}

# model_bytes_total: model bytes received by every live provider in the list.
model_bytes_total() {
  local total=0 v
  for n in "$@"; do
    v="$(metric "$n" gpugrid_model_bytes_received_total)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# run_grid NAME ARGS...: gpugrid run on the grid with the client data dir $tmp/client; sets $code.
run_grid() {
  local name="$1"
  shift
  "$bin" run "$model" "$sample" --data-dir "$tmp/client" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null
  code=$?
}

"$bin" run "$model" "$sample" --local -o "$tmp/local.npy" || { echo "FAIL: --local run failed" >&2; exit 1; }

# ---- 1. five providers found through one bootstrap peer; results equal --local
start_provider p0 || exit 1
for n in p1 p2 p3 p4; do start_provider "$n" --peer "$url_p0" || exit 1; done
boot="$url_p0"
found=0
for _ in $(seq 1 60); do
  "$bin" peers --peer "$boot" --data-dir "$tmp/client" --json >"$tmp/peers.json" 2>"$tmp/peers.err"
  found="$(grep -c '"node_id"' "$tmp/peers.json")"
  [ "$found" -ge 5 ] && break
  sleep 0.1
done
[ "$found" -eq 5 ] || fail "peers through one bootstrap found $found providers, not 5: $(cat "$tmp/peers.err")"
grep -q '"rtt_ms":[0-9]' "$tmp/peers.json" || fail "peers --json shows no round-trip time"
"$bin" peers --peer "$boot" --data-dir "$tmp/client" >"$tmp/peers.txt" 2>&1
grep -q "^NODE .*URL .*DEVICE .*PRICE .*RTT" "$tmp/peers.txt" || fail "peers table has no header: $(head -2 "$tmp/peers.txt")"
# A provider learns the whole grid from the bootstrap peer too (gossip).
known="$(metric p4 gpugrid_peers_known)"
[ "${known:-0}" -ge 4 ] || fail "provider p4 knows ${known:-0} peers, not the other 4"

run_grid first --peer "$boot" -o "$tmp/grid1.npy" --json
[ "$code" -eq 0 ] || fail "run on the grid exited $code: $(cat "$tmp/first.err")"
cmp -s "$tmp/local.npy" "$tmp/grid1.npy" || fail "grid result differs from --local"
grep -q '"paid":true' "$tmp/first.out" || fail "run --json shows no paid provider: $(cat "$tmp/first.out")"

# ---- 2. the second run of a model sends no model bytes
all="p0 p1 p2 p3 p4"
before="$(model_bytes_total $all)"
[ "$before" -gt 0 ] || fail "the first run sent no model bytes (metrics say $before)"
run_grid second --peer "$boot" -o "$tmp/grid2.npy"
[ "$code" -eq 0 ] || fail "second run exited $code: $(cat "$tmp/second.err")"
after="$(model_bytes_total $all)"
[ "$after" -eq "$before" ] || fail "the second run sent the model again ($before -> $after bytes)"
cmp -s "$tmp/local.npy" "$tmp/grid2.npy" || fail "second grid result differs from --local"

# ---- 3. receipts: the client's and the providers' ledgers hold the same paid jobs, and verify
"$bin" ledger verify --data-dir "$tmp/client" >/dev/null 2>&1 || fail "client ledger does not verify"
client_jobs="$("$bin" ledger show --data-dir "$tmp/client" --json | grep -o '"job_id":"[0-9a-f]*"' | sort)"
# The countersigned receipt reaches the provider just after the client exits: wait for it.
for _ in $(seq 1 40); do
  provider_jobs="$(for n in $all; do "$bin" ledger show --data-dir "$tmp/$n" --json 2>/dev/null | grep -o '"job_id":"[0-9a-f]*"'; done | sort)"
  [ "$client_jobs" = "$provider_jobs" ] && break
  sleep 0.05
done
[ "$(echo "$client_jobs" | grep -c job_id)" -eq 2 ] || fail "client ledger holds $(echo "$client_jobs" | grep -c job_id) receipts, not 2"
[ "$client_jobs" = "$provider_jobs" ] || fail "client and provider ledgers disagree: [$client_jobs] vs [$provider_jobs]"
for n in $all; do "$bin" ledger verify --data-dir "$tmp/$n" >/dev/null 2>&1 || fail "provider $n ledger does not verify"; done
# The ledger head travels in the Hello: peers shows a provider with receipts.
"$bin" peers --peer "$boot" --data-dir "$tmp/client" --json >"$tmp/peers2.json" 2>/dev/null
grep -q '"count":[1-9]' "$tmp/peers2.json" || fail "peers --json shows no provider ledger with receipts"

# ---- 4. a provider killed with SIGKILL mid-job: the job completes elsewhere, paid once
start_provider victim --fault stall --peer "$boot" --price 0.00001 || exit 1
sleep 0.3
"$bin" run "$model" "$sample" --peer "$boot" --data-dir "$tmp/client" -o "$tmp/grid3.npy" --json \
  >"$tmp/kill.out" 2>"$tmp/kill.err" </dev/null &
client=$!
wait_for_job victim || fail "the cheapest provider never got the job"
kill -9 "$pid_victim"
wait "$client"
code=$?
[ "$code" -eq 0 ] || fail "run after SIGKILL of its provider exited $code: $(cat "$tmp/kill.err")"
cmp -s "$tmp/local.npy" "$tmp/grid3.npy" || fail "result after failover differs from --local"
grep -q '"paid":true' "$tmp/kill.out" || fail "failover run paid nobody"
[ "$(grep -o '"paid":true' "$tmp/kill.out" | wc -l)" -eq 1 ] || fail "failover run paid more than one provider"
n_client="$("$bin" ledger show --data-dir "$tmp/client" --json | grep -o '"job_id"' | wc -l)"
[ "$n_client" -eq 3 ] || fail "after the failover run the client ledger holds $n_client receipts, not 3"
n_victim="$("$bin" ledger show --data-dir "$tmp/victim" --json 2>/dev/null | grep -o '"job_id"' | wc -l)"
[ "$n_victim" -eq 0 ] || fail "the killed provider has $n_victim receipts"

# ---- 5. a provider that crashes itself mid-job (test double): failover too
start_provider crasher --fault crash --peer "$boot" --price 0.00001 || exit 1
sleep 0.3
run_grid crash --peer "$boot" -o "$tmp/grid4.npy"
[ "$code" -eq 0 ] || fail "run with a crashing provider exited $code: $(cat "$tmp/crash.err")"
cmp -s "$tmp/local.npy" "$tmp/grid4.npy" || fail "result after a crash differs from --local"
alive "$pid_crasher" && fail "the crashing provider is still alive (did it get the job?)"

# ---- 6. a stalling provider: timeout, then the next bid
start_provider staller --fault stall --peer "$boot" --price 0.00001 || exit 1
sleep 0.3
t0=$(date +%s)
run_grid stall --peer "$boot" --timeout 2 -o "$tmp/grid5.npy"
t1=$(date +%s)
[ "$code" -eq 0 ] || fail "run with a stalling provider exited $code: $(cat "$tmp/stall.err")"
cmp -s "$tmp/local.npy" "$tmp/grid5.npy" || fail "result after a stall differs from --local"
[ $((t1 - t0)) -ge 2 ] || fail "the stalled job did not wait for its timeout ($((t1 - t0)) s)"
[ $((t1 - t0)) -le 8 ] || fail "the stalled job took $((t1 - t0)) s"
kill -TERM "$pid_staller" 2>/dev/null; sleep 0.1; kill -TERM "$pid_staller" 2>/dev/null

# ---- 6b. graceful drain: SIGTERM takes no new bids; a second one hands the running job back
start_provider drainer --fault stall --peer "$boot" --price 0.00001 || exit 1
sleep 0.3
"$bin" run "$model" "$sample" --peer "$boot" --data-dir "$tmp/client" -o "$tmp/grid8.npy" \
  >"$tmp/drain.out" 2>"$tmp/drain.err" </dev/null &
client=$!
wait_for_job drainer || fail "the draining provider never got the job"
t0=$(date +%s)
kill -TERM "$pid_drainer"
sleep 0.3
[ "$(metric drainer gpugrid_draining)" = "1" ] || fail "after SIGTERM the provider does not report draining"
kill -TERM "$pid_drainer"
wait "$client"
code=$?
t1=$(date +%s)
[ "$code" -eq 0 ] || fail "run whose provider drained exited $code: $(cat "$tmp/drain.err")"
cmp -s "$tmp/local.npy" "$tmp/grid8.npy" || fail "result after a hand-back differs from --local"
[ $((t1 - t0)) -le 10 ] || fail "the handed-back job took $((t1 - t0)) s to finish elsewhere"
wait "$pid_drainer"
[ $? -eq 0 ] || fail "the draining provider exited non-zero"
grep -q '"event":"stopped","handed_back":1' "$tmp/drainer.log" || fail "the drainer did not report handing back 1 job: $(tail -2 "$tmp/drainer.log")"

# ---- 6c. SIGINT during a running job: the job finishes here and its client gets the result
start_provider slowpoke --fault slow --peer "$boot" --price 0.00001 || exit 1
sleep 0.3
"$bin" run "$model" "$sample" --peer "$boot" --data-dir "$tmp/client" -o "$tmp/grid9.npy" \
  >"$tmp/sigint.out" 2>"$tmp/sigint.err" </dev/null &
client=$!
wait_for_job slowpoke || fail "the slow provider never got the job"
kill -INT "$pid_slowpoke"
wait "$client"
code=$?
[ "$code" -eq 0 ] || fail "run whose provider got SIGINT mid-job exited $code: $(cat "$tmp/sigint.err")"
cmp -s "$tmp/local.npy" "$tmp/grid9.npy" || fail "result of the drained job differs from --local"
wait "$pid_slowpoke"
[ $? -eq 0 ] || fail "the provider stopped with SIGINT exited non-zero"
grep -q '"event":"stopped","handed_back":0' "$tmp/slowpoke.log" || fail "the drained provider handed its job back instead of finishing it: $(tail -2 "$tmp/slowpoke.log")"
grep -q '"event":"job_done"' "$tmp/slowpoke.log" || fail "the drained provider did not finish its job"

# ---- 7. a corrupting provider is caught with --redundancy 2, loses reputation, gets no more bids
start_provider liar --fault corrupt --peer "$boot" --price 0.00001 || exit 1
sleep 0.3
run_grid liar --peer "$boot" --redundancy 2 -o "$tmp/grid6.npy" --json
if [ "$code" -eq 0 ]; then
  cmp -s "$tmp/local.npy" "$tmp/grid6.npy" || fail "redundant run accepted the corrupted result"
  grep -q '"agreed":false' "$tmp/liar.out" || fail "redundant run did not flag the disagreeing provider: $(cat "$tmp/liar.out")"
elif [ "$code" -ne 4 ]; then
  fail "redundant run with a liar exited $code (want 0 with the honest answer, or 4): $(cat "$tmp/liar.err")"
fi
liar_id="$(sed -n 's/.*"event":"listening","node_id":"\([^"]*\)".*/\1/p' "$tmp/liar.log")"
grep -q "^$liar_id" "$tmp/client/reputation.tsv" 2>/dev/null || fail "no reputation recorded for the liar"
"$bin" peers --peer "$boot" --data-dir "$tmp/client" --json >"$tmp/peers3.json" 2>/dev/null
rep="$(grep "\"$liar_id\"" "$tmp/peers3.json" | sed -n 's/.*"reputation":\([0-9.e-]*\).*/\1/p')"
awk -v r="${rep:-1}" 'BEGIN { exit !(r < 0.2) }' || fail "the liar's reputation is ${rep:-unknown}, not below 0.2"
bids_before="$(metric liar gpugrid_bids_total)"
run_grid after_liar --peer "$boot" -o "$tmp/grid7.npy"
[ "$code" -eq 0 ] || fail "run after catching the liar exited $code: $(cat "$tmp/after_liar.err")"
cmp -s "$tmp/local.npy" "$tmp/grid7.npy" || fail "run after catching the liar got a wrong result"
bids_after="$(metric liar gpugrid_bids_total)"
[ "$bids_after" = "$bids_before" ] || fail "the distrusted liar still got bid requests ($bids_before -> $bids_after)"
"$bin" ledger verify --data-dir "$tmp/client" >/dev/null 2>&1 || fail "client ledger does not verify after the dispute"
# (to a file first: under pipefail, grep -q leaving early would fail the pipeline by SIGPIPE)
"$bin" ledger show --data-dir "$tmp/client" --json >"$tmp/ledger_show.json"
grep -q '"kind":"dispute"' "$tmp/ledger_show.json" || fail "no dispute receipt for the liar's signed wrong result"

# ---- 7b. balance: what the client paid equals what the providers earned, by their own ledgers
client_id="$("$bin" identity show --data-dir "$tmp/client" --json | sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p')"
balanced=0
for _ in $(seq 1 40); do
  paid="$("$bin" ledger balance --data-dir "$tmp/client" --json |
    python3 -c 'import json,sys; me=sys.argv[1]; print(round(sum(e["paid"] for e in json.load(sys.stdin) if e["node_id"]==me)*1e6))' "$client_id")"
  earned=0
  for n in p0 p1 p2 p3 p4 victim crasher staller drainer slowpoke liar; do
    [ -d "$tmp/$n" ] || continue
    id="$("$bin" identity show --data-dir "$tmp/$n" --json | sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p')"
    e="$("$bin" ledger balance --data-dir "$tmp/$n" --json 2>/dev/null |
      python3 -c 'import json,sys; me=sys.argv[1]; print(round(sum(e["earned"] for e in json.load(sys.stdin) if e["node_id"]==me)*1e6))' "$id" 2>/dev/null)"
    earned=$((earned + ${e:-0}))
  done
  if [ "$paid" -gt 0 ] && [ "$paid" -eq "$earned" ]; then balanced=1; break; fi
  sleep 0.05
done
[ "$balanced" -eq 1 ] || fail "the client paid $paid micro-credits but the providers' ledgers show $earned earned"

# ---- 8. metrics, plain HTTP and graceful shutdown
body="$(exec 3<>"/dev/tcp/127.0.0.1/$port_p1" && printf 'GET /nothing HTTP/1.0\r\n\r\n' >&3 && cat <&3)"
[[ "$body" == *"404"* ]] || fail "GET /nothing is not a 404: ${body:0:80}"
[ -n "$(metric p1 gpugrid_frames_rejected_total)" ] || fail "metrics lack gpugrid_frames_rejected_total"
kill -TERM "$pid_p1"
for _ in $(seq 1 100); do alive "$pid_p1" || break; sleep 0.05; done
alive "$pid_p1" && fail "provider p1 did not stop on SIGTERM"
wait "$pid_p1"
[ $? -eq 0 ] || fail "provider p1 exited non-zero on SIGTERM"
grep -q '"event":"stopped"' "$tmp/p1.log" || fail "provider p1 did not report a clean stop"

# ---- 9. nobody to ask: exit 3 with one line
"$bin" run "$model" "$sample" --peer ws://127.0.0.1:1 --data-dir "$tmp/client" --timeout 2 >"$tmp/none.out" 2>"$tmp/none.err"
code=$?
[ "$code" -eq 3 ] || fail "run with an unreachable peer exited $code, not 3"
[ "$(wc -l <"$tmp/none.err")" -eq 1 ] || fail "unreachable peer: not one line on stderr: $(cat "$tmp/none.err")"

"$bin" peers --peer ws://127.0.0.1:1 --data-dir "$tmp/client" >"$tmp/none2.out" 2>"$tmp/none2.err"
code=$?
[ "$code" -eq 3 ] || fail "peers with an unreachable peer exited $code, not 3"
[ "$(wc -l <"$tmp/none2.err")" -eq 1 ] || fail "peers, unreachable peer: not one line on stderr: $(cat "$tmp/none2.err")"
# A device that is not there: exit 2, one line naming it.
"$bin" offer --device cuda:99 --listen 127.0.0.1:0 --data-dir "$tmp/nodev" >"$tmp/nodev.out" 2>"$tmp/nodev.err"
code=$?
[ "$code" -eq 2 ] || fail "offer --device cuda:99 exited $code, not 2"
[ "$(wc -l <"$tmp/nodev.err")" -eq 1 ] && grep -q "cuda:99" "$tmp/nodev.err" ||
  fail "offer --device cuda:99: not one line naming the device: $(cat "$tmp/nodev.err")"
# A port that is taken: one line naming the address, exit 1 (an operating system refusal).
"$bin" offer --listen "127.0.0.1:$port_p2" --data-dir "$tmp/taken" >"$tmp/taken.out" 2>"$tmp/taken.err"
code=$?
[ "$code" -eq 1 ] || fail "offer on a taken port exited $code, not 1"
[ "$(wc -l <"$tmp/taken.err")" -eq 1 ] && grep -q "127.0.0.1:$port_p2" "$tmp/taken.err" ||
  fail "offer on a taken port: not one line naming the address: $(cat "$tmp/taken.err")"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  for f in "$tmp"/*.err; do echo "== $f"; tail -3 "$f"; done >&2
  exit 1
fi
echo "grid over loopback: all checks passed"
