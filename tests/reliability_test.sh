#!/usr/bin/env bash
# The reliability suite: every attack and fault of the open-network list (ledger and payments,
# discovery and connections, uploads and jobs, verification, shutdown and messages) replayed
# against real `gpugrid offer` and `gpugrid run` processes, each node a "host" of its own: a
# network namespace with its own address on one bridge, hosts spread over several /24 networks
# (10.91.0.0/16), so per-address connection caps and network-prefix diversity are real.
# Misbehaving peers are the test doubles of gpugrid-faulty (tests/faulty_offer_main.cc).
#
# Each scenario prints one line "[N] PASS|FAIL|SKIP title: figures"; then `ledger verify` runs
# on every node's data dir. The short version (the default) keeps each scenario small for CI;
# RELIABILITY_LONG=1 (bench/reliability_bench.sh) runs more rounds, and RELIABILITY_REPORT=FILE
# appends each scenario's line to FILE as a Markdown table row; RELIABILITY_KEEP=DIR keeps a copy
# of every log and data dir there.
# Needs root (CAP_NET_ADMIN, and a tmpfs mount for the full-disk scenario): skipped (exit 77)
# otherwise. Python with numpy and onnx (tests/python_env.sh) makes the hand-made inputs of
# scenarios 3, 11 and 12; without it those parts are skipped with a note.
# Usage: tests/reliability_test.sh path/to/gpugrid path/to/source
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$(cd "$2" && pwd)"
faulty="$(dirname "$bin")/gpugrid-faulty"
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip)"
command -v curl >/dev/null || skip "needs curl (for /metrics inside the namespaces)"
[ -x "$faulty" ] || skip "needs the gpugrid-faulty test binary beside gpugrid (built with the tests)"

long="${RELIABILITY_LONG:-0}"
big() { if [ "$long" = 1 ]; then echo "$2"; else echo "$1"; fi; }  # big SHORT LONG

tag="rs$$"
tmp="$(mktemp -d)"
pids=()
spaces=(sw cl ev sl p1 p2 p3 p4 p5 l1 l2 l3)
source "$src/tests/lib/netns.sh"
cleanup() {
  [ -n "${RELIABILITY_KEEP:-}" ] && cp -r "$tmp" "$RELIABILITY_KEEP" 2>/dev/null
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; done
  mountpoint -q "$tmp/pe" 2>/dev/null && { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; sleep 0.2; umount "$tmp/pe"; }
  netns_cleanup
}
trap cleanup EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
source "$src/tests/lib/ledger_checks.sh"
source "$src/tests/python_env.sh" "$src"
model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"
record=421  # bytes of one ledger record (ledger/ledger.cc)

# ---- the hosts: every namespace on one bridge, at these addresses (10.91.0.0/16)
declare -A addr=([cl]=10.91.1.2 [ev]=10.91.9.66 [sl]=10.91.8.1 [p1]=10.91.2.1 [p2]=10.91.3.1 [p3]=10.91.4.1
  [p4]=10.91.5.1 [p5]=10.91.10.1 [l1]=10.91.6.1 [l2]=10.91.6.2 [l3]=10.91.7.1)
netns_create || skip "$netns_error"
for h in "${!addr[@]}"; do netns_public "$h" "${addr[$h]}" 16 || skip "$netns_error"; done
out="$(nsx cl timeout 5 bash -c "exec 3<>/dev/tcp/${addr[p1]}/9" 2>&1)"
[[ "$out" == *refused* ]] || skip "the namespaces cannot reach each other: $out"

# ---- helpers
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
now_ms() { date +%s%3N; }
stop() { kill -"${2:-TERM}" "$1" 2>/dev/null; for _ in $(seq 1 100); do alive "$1" || return 0; sleep 0.05; done; kill -9 "$1" 2>/dev/null; }

# start NAME HOST PORT DIR [--fault FAULT] [ARGS...]: `gpugrid offer` (or the test double's, with
# --fault) on HOST:PORT with data dir DIR, output through pipes (so that a file-size limit,
# $fsize in 1024-byte blocks when set, applies to the ledger and not to the logs); waits for its
# "listening" event. Sets url_NAME, pid_NAME, host_NAME, listen_NAME.
start() {
  local name="$1" host="$2" port="$3" dir="$4"
  shift 4
  local cmd=("$bin")
  if [ "${1:-}" = "--fault" ]; then cmd=("$faulty" "$2"); shift 2; fi
  ( ( if [ -n "${fsize:-}" ]; then ulimit -f "$fsize"; fi
      exec ip netns exec "$tag-$host" "${cmd[@]}" offer --listen "${addr[$host]}:$port" --data-dir "$dir" --json "$@" ) \
      > >(cat >"$tmp/$name.log") 2> >(cat >"$tmp/$name.err") </dev/null &
    echo $! >"$tmp/$name.pid" )
  local pid
  pid="$(cat "$tmp/$name.pid")"
  pids+=("$pid")
  printf -v "pid_$name" '%s' "$pid"
  printf -v "host_$name" '%s' "$host"
  printf -v "listen_$name" '%s' "${addr[$host]}:$port"
  printf -v "url_$name" '%s' "ws://${addr[$host]}:$port"
  for _ in $(seq 1 200); do
    grep -q '"event":"listening"' "$tmp/$name.log" 2>/dev/null && return 0
    alive "$pid" || break
    sleep 0.05
  done
  fail "provider $name did not start: $(cat "$tmp/$name.err")"
  return 1
}
# metric NAME KEY [FROM_HOST]: one value of provider NAME's /metrics (asked from its own host).
metric() {
  local h="host_$1" l="listen_$1"
  nsx "${3:-${!h}}" curl -s --max-time 3 "http://${!l}/metrics" | awk -v k="$2" '$1 == k { print $2 }'
}
# run NAME DIR ARGS...: `gpugrid run` of the digit model on host cl with data dir DIR; sets code and ms.
run() {
  local name="$1" dir="$2" t0
  shift 2
  t0=$(now_ms)
  nsx cl "$bin" run "$model" "$sample" --data-dir "$dir" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null
  code=$?
  ms=$(($(now_ms) - t0))
}
# wrong NAME: the run's output differs from the local engine's.
wrong() { ! cmp -s "$tmp/local.npy" "$tmp/$1.npy"; }
wait_for_job() {  # wait_for_job NAME: up to 10 s until provider NAME holds a job
  for _ in $(seq 1 200); do
    [ "$(metric "$1" gpugrid_jobs_in_flight)" -ge 1 ] 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
id_of() { sed -n 's/.*"event":"listening","node_id":"\([^"]*\)".*/\1/p' "$tmp/$1.log" | head -1; }

# Scenario bookkeeping: one line per scenario, and a Markdown row in $RELIABILITY_REPORT.
n=0
scenario() { n=$((n + 1)); title="$1"; fig=""; before=$failures; t_scn=$(now_ms); echo "--- [$n] $title"; }
figure() { fig="${fig:+$fig; }$*"; }
verdict() {  # verdict [SKIP]
  local v=PASS
  [ "$failures" -gt "$before" ] && v=FAIL
  [ "${1:-}" = SKIP ] && v=SKIP
  local secs
  secs=$(awk -v a="$t_scn" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
  echo "[$n] $v $title: $fig ($secs s)"
  [ -n "${RELIABILITY_REPORT:-}" ] && printf '| %s | %s | %s | %s |\n' "$n" "$title" "$fig" "$v" >>"$RELIABILITY_REPORT"
  return 0
}

"$bin" run "$model" "$sample" --local -o "$tmp/local.npy" 2>/dev/null || { echo "FAIL: --local run failed" >&2; exit 1; }
# Honest providers, each alone on its host and /24 (none knows the others: each scenario names
# the providers its client asks).
start p1 p1 7447 "$tmp/p1" || exit 1
start p2 p2 7447 "$tmp/p2" || exit 1
start p3 p3 7447 "$tmp/p3" || exit 1
start p4 p4 7447 "$tmp/p4" || exit 1
p1_id="$(node_id "$tmp/p1")"

# ======================================================================== ledger and payments
scenario "one data dir: a second offer, and concurrent runs sharing a client data dir"
par=$(big 4 8)
ip netns exec "$tag-p1" "$bin" offer --listen "${addr[p1]}:7448" --data-dir "$tmp/p1" >"$tmp/dup.out" 2>"$tmp/dup.err" </dev/null &
dup=$!
pids+=("$dup")
for _ in $(seq 1 100); do alive "$dup" || break; sleep 0.05; done
if alive "$dup"; then
  fail "a second offer on one data dir is still running"
else
  wait "$dup"
  dup_code=$?
  [ "$dup_code" -eq 2 ] && grep -q "in use" "$tmp/dup.err" || fail "a second offer on one data dir exited $dup_code: $(cat "$tmp/dup.err")"
fi
run warm "$tmp/c1" --peer "$url_p1"
[ "$code" -eq 0 ] || fail "the first run exited $code: $(cat "$tmp/warm.err")"
rp=()
t0=$(now_ms)
for i in $(seq 1 "$par"); do
  ip netns exec "$tag-cl" "$bin" run "$model" "$sample" --data-dir "$tmp/c1" --peer "$url_p1" >"$tmp/par$i.out" 2>"$tmp/par$i.err" </dev/null &
  rp+=("$!")
done
bad=0
for i in $(seq 1 "$par"); do wait "${rp[$((i - 1))]}" || { bad=$((bad + 1)); fail "parallel run $i: $(cat "$tmp/par$i.err")"; }; done
par_ms=$(($(now_ms) - t0))
verify "$tmp/c1" "client after $par parallel runs"
pays="$(count "$(jobs_of "$tmp/c1")")"
[ "$pays" -eq $((par + 1)) ] || fail "the shared client ledger holds $pays payments after $((par + 1)) runs"
figure "2nd offer exit ${dup_code:-?} (in use); $par runs at once in $par_ms ms, $bad failed, $pays of $((par + 1)) payments, verify OK"
verdict

scenario "a provider's disk fills mid-append (ENOSPC on a full tmpfs; RLIMIT_FSIZE)"
# a) a real full disk: the provider's data dir on a 1 MiB tmpfs, filled after its first job.
mkdir -p "$tmp/pe"
if mount -t tmpfs -o size=1m tmpfs "$tmp/pe" 2>/dev/null; then
  start pe p5 7450 "$tmp/pe" || true
  pe_id="$(node_id "$tmp/pe")"
  run pe0 "$tmp/c2" --peer "$url_pe"
  [ "$code" -eq 0 ] || fail "the run before the disk filled exited $code: $(cat "$tmp/pe0.err")"
  dd if=/dev/zero of="$tmp/pe/filler" bs=4k >/dev/null 2>&1
  took=1 refused=0
  for i in $(seq 1 16); do
    run pe$i "$tmp/c2" --peer "$url_pe"
    if [ "$code" -ne 0 ]; then
      refused=$i
      grep -q "cannot record payments" "$tmp/pe$i.err" || fail "the refusal on a full disk does not say why: $(cat "$tmp/pe$i.err")"
      break
    fi
    took=$((took + 1))
  done
  [ "$refused" -gt 0 ] || fail "the provider on a full disk never stopped taking jobs"
  alive "$pid_pe" || fail "the provider on a full disk died"
  grep -q "cannot record payments" "$tmp/pe.err" || fail "the provider on a full disk did not say so on stderr"
  size="$(stat -c %s "$tmp/pe/ledger.log")"
  [ $((size % record)) -eq 0 ] || fail "after ENOSPC the provider ledger is $size bytes: a fragment was left"
  verify "$tmp/pe" "provider after ENOSPC"
  held="$(count "$(jobs_of "$tmp/pe")")"
  rm -f "$tmp/pe/filler"
  run pe_after "$tmp/c2" --peer "$url_pe"
  [ "$code" -eq 0 ] || fail "the run after the disk had room again exited $code: $(cat "$tmp/pe_after.err")"
  [ "$(jobs_of "$tmp/c2" "$pe_id")" = "$(jobs_of "$tmp/pe")" ] ||
    fail "after room returned the provider holds $(count "$(jobs_of "$tmp/pe")") of the client's $(count "$(jobs_of "$tmp/c2" "$pe_id")") payments"
  figure "ENOSPC: $took jobs recorded, then the job after a failed append refused (run $refused, exit 3, 'cannot record payments'); ledger $size bytes = $((size / record)) whole records, verify OK; room back: $(count "$(jobs_of "$tmp/pe")") = client's payments"
  stop "$pid_pe"
  verify "$tmp/pe" "provider after ENOSPC and redelivery"
  umount "$tmp/pe" || fail "cannot unmount the full-disk tmpfs"
else
  figure "ENOSPC part skipped: cannot mount a tmpfs here"
fi
# b) a file-size limit (SIGXFSZ / EFBIG): room for about 1.5 more records.
stop "$pid_p1"
size="$(stat -c %s "$tmp/p1/ledger.log")"
fsize=$(((size + record + record / 2 + 1023) / 1024))
start p1b p1 7447 "$tmp/p1" || exit 1
fsize=""
refused=0
for i in 1 2 3 4 5 6 7 8; do
  run full$i "$tmp/c1" --peer "$url_p1b"
  if [ "$code" -ne 0 ]; then
    refused=$i
    [ "$code" -eq 3 ] && grep -q "cannot record payments" "$tmp/full$i.err" || fail "a run against a full ledger exited $code: $(cat "$tmp/full$i.err")"
    break
  fi
done
[ "$refused" -gt 1 ] || fail "the provider with a file-size limit took no job, or every job ($refused)"
alive "$pid_p1b" || fail "the provider with a file-size limit died"
stop "$pid_p1b"
size="$(stat -c %s "$tmp/p1/ledger.log")"
[ $((size % record)) -eq 0 ] || fail "after EFBIG the provider ledger is $size bytes: a fragment was left"
verify "$tmp/p1" "provider after its file-size limit"
start p1 p1 7447 "$tmp/p1" || exit 1
run after "$tmp/c1" --peer "$url_p1"
[ "$code" -eq 0 ] || fail "the run after the limit was lifted exited $code: $(cat "$tmp/after.err")"
[ "$(jobs_of "$tmp/c1" "$p1_id")" = "$(jobs_of "$tmp/p1")" ] || fail "after redelivery the provider and client ledgers differ"
figure "RLIMIT_FSIZE: run $refused refused, no fragment, restarted: $(count "$(jobs_of "$tmp/p1")") payments both sides"
verdict

scenario "duplicate job ids: a receipt sent again and again; a ledger that counts a job twice"
copies=$(big 5 20)
before_p2="$(count "$(jobs_of "$tmp/p2")")"
nsx ev "$faulty" attack client "$url_p2" "$model" "$sample" 3 --receipt-copies "$copies" >"$tmp/dupr.out" 2>&1
grep -q "^served 3 of 3" "$tmp/dupr.out" || fail "the replaying client was not served: $(cat "$tmp/dupr.out")"
after_p2="$(count "$(jobs_of "$tmp/p2")")"
[ $((after_p2 - before_p2)) -eq 3 ] || fail "3 jobs with each receipt sent $copies times left $((after_p2 - before_p2)) entries"
verify "$tmp/p2" "provider after receipt replays"
figure "3 jobs, each receipt sent $copies times: $((after_p2 - before_p2)) entries ($(sed -n 's/.*receipts recorded \([0-9]*\) (acks \([0-9]*\)).*/\2 answered as recorded/p' "$tmp/dupr.out"))"
if [ -n "$PY" ]; then
  mkdir -p "$tmp/forged"
  cp "$tmp/p2/ledger.log" "$tmp/forged/"
  "$PY" "$src/tests/tools/reliability_inputs.py" dup-ledger "$tmp/forged/ledger.log" 9
  "$bin" ledger verify --data-dir "$tmp/forged" >/dev/null 2>"$tmp/forged.err"
  vcode=$?
  [ "$vcode" -ne 0 ] || fail "ledger verify accepts 9 chained duplicates of one job"
  grep -qi "job" "$tmp/forged.err" || fail "the verify error does not name the duplicate job: $(cat "$tmp/forged.err")"
  figure "9 chained duplicates appended by hand: verify exit $vcode: '$(head -1 "$tmp/forged.err" | sed 's|.*ledger.log: ||' | cut -c1-90)'"
else
  figure "hand-made duplicate ledger skipped (no Python with numpy and onnx)"
fi
verdict

scenario "a client that takes results and never countersigns"
nocs=$(big 20 100)
nsx ev "$faulty" attack client "$url_p2" "$model" "$sample" "$nocs" --no-receipt >"$tmp/nocs.out" 2>&1
served="$(sed -n 's/^served \([0-9]*\) of.*/\1/p' "$tmp/nocs.out")"
[ -n "$served" ] && [ "$served" -ge 1 ] && [ "$served" -le 8 ] || fail "a client that never countersigns was served ${served:-?} of $nocs (credit 8): $(cat "$tmp/nocs.out")"
grep -q "unpaid" "$tmp/nocs.out" || fail "the refusal does not say jobs are unpaid: $(cat "$tmp/nocs.out")"
run honest4 "$tmp/c4" --peer "$url_p2"
[ "$code" -eq 0 ] || fail "an honest client was refused after the non-payer: $(cat "$tmp/honest4.err")"
figure "served ${served:-?} of $nocs (unpaid credit 8), then declined: '$(sed -n 's/^first error: declined: //p' "$tmp/nocs.out" | cut -c1-60)'; an honest client is still served"
verdict

scenario "a provider killed with SIGKILL while clients pay it"
rounds=$(big 3 20)
pending=0  # receipts the client held unacknowledged after each kill (sent again next round)
for round in $(seq 1 "$rounds"); do
  stop "$pid_p1"
  start p1 p1 7447 "$tmp/p1" || break
  ( for i in 1 2 3 4 5 6; do
      nsx cl "$bin" run "$model" "$sample" --data-dir "$tmp/c1" --peer "$url_p1" --timeout 5 >/dev/null 2>&1 </dev/null
    done ) &
  loop=$!
  sleep "$(printf '0.%03d' $((200 + RANDOM % 700)))"
  stop "$pid_p1" 9
  wait "$loop"
  pending=$((pending + $(stat -c %s "$tmp/c1/receipts.pending" 2>/dev/null || echo 0) / 337))
done
start p1 p1 7447 "$tmp/p1" || exit 1
run settle "$tmp/c1" --peer "$url_p1"
[ "$code" -eq 0 ] || fail "the run after the kills exited $code: $(cat "$tmp/settle.err")"
verify "$tmp/c1" "client after the kills"
verify "$tmp/p1" "provider after the kills"
cj="$(jobs_of "$tmp/c1" "$p1_id")"
pj="$(jobs_of "$tmp/p1")"
[ "$cj" = "$pj" ] || fail "after SIGKILLs the provider holds $(count "$pj") payments, the client $(count "$cj")"
figure "$rounds kills: $pending receipts left unacknowledged by a kill, all redelivered; client $(count "$cj") = provider $(count "$pj") payments, both verify"
verdict

scenario "--redundancy 3 pays every agreeing provider"
b2="$(count "$(jobs_of "$tmp/p2")")" b3="$(count "$(jobs_of "$tmp/p3")")" b4="$(count "$(jobs_of "$tmp/p4")")"
run red "$tmp/c6" --peer "$url_p2" --peer "$url_p3" --peer "$url_p4" --redundancy 3 --json -o "$tmp/red.npy"
[ "$code" -eq 0 ] || fail "the --redundancy 3 run exited $code: $(cat "$tmp/red.err")"
paid="$(grep -o '"paid":true' "$tmp/red.out" | wc -l)"
[ "$paid" -eq 3 ] || fail "--redundancy 3 paid $paid providers"
sleep 0.2
grown=$(($(count "$(jobs_of "$tmp/p2")") - b2 + $(count "$(jobs_of "$tmp/p3")") - b3 + $(count "$(jobs_of "$tmp/p4")") - b4))
[ "$grown" -eq 3 ] || fail "the three providers' ledgers grew by $grown, not 3"
figure "$paid of 3 paid; the providers' ledgers grew by $grown"
verdict

# ==================================================================== discovery and connections
scenario "one gossip message of 10,000 fake peers (at a silent listener)"
ip netns exec "$tag-sl" python3 -c 'import socket,time,sys
s=socket.socket(); s.bind(("0.0.0.0",9999)); s.listen(1024); print("ok"); sys.stdout.flush(); time.sleep(3600)' >"$tmp/silent.out" &
pids+=($!)
start g1 p5 7451 "$tmp/g1" || exit 1
start g2 p4 7452 "$tmp/g2" --peer "$url_g1" || exit 1
sleep 0.3
run gbase "$tmp/c7" --peer "$url_g1"
base_ms=$ms
[ "$code" -eq 0 ] || fail "the run before the flood exited $code: $(cat "$tmp/gbase.err")"
nsx ev "$faulty" attack flood-peers "$url_g1" 10000 "${addr[sl]}:9999" >"$tmp/flood.out" 2>&1
sleep 0.5
known="$(metric g1 gpugrid_peers_known)"
known2="$(metric g2 gpugrid_peers_known)"
[ -n "$known" ] || fail "the flooded provider no longer answers /metrics"
[ "${known:-99999}" -le 300 ] || fail "the flooded provider holds $known peers"
[ "${known2:-99999}" -le 10 ] || fail "the flooded provider's neighbour was poisoned: it knows $known2 peers"
worst=0 ok=0
frounds=$(big 3 20)
pending=0  # receipts the client held unacknowledged after each kill (sent again next round)
for i in $(seq 1 "$frounds"); do
  run flood$i "$tmp/c7" --peer "$url_g1"
  [ "$code" -eq 0 ] && ok=$((ok + 1)) || fail "run $i after the flood exited $code: $(cat "$tmp/flood$i.err")"
  [ "$ms" -gt "$worst" ] && worst=$ms
done
[ "$worst" -le $((base_ms + 3000)) ] || fail "the slowest run after the flood took $worst ms (before: $base_ms ms)"
figure "flooded provider keeps ${known:-?} peers, its neighbour ${known2:-?}; $ok of $frounds runs after it, slowest $worst ms (before $base_ms ms)"
stop "$pid_g1"
stop "$pid_g2"
verdict

scenario "connection slots: one identity, and one address with many identities"
ip netns exec "$tag-ev" "$faulty" attack hold-slots "$url_p3" 50 6 >"$tmp/hold1.out" 2>&1 &
h1=$!
pids+=("$h1")
many=$(big 200 400)
ip netns exec "$tag-ev" "$faulty" attack hold-slots "$url_p3" "$many" 8 --many-ids >"$tmp/hold2.out" 2>&1 &
h2=$!
pids+=("$h2")
for _ in $(seq 1 300); do [ -s "$tmp/hold1.out" ] && [ -s "$tmp/hold2.out" ] && break; sleep 0.05; done
one="$(sed -n 's/^opened \([0-9]*\) of.*/\1/p' "$tmp/hold1.out")"
manyo="$(sed -n 's/^opened \([0-9]*\) of.*/\1/p' "$tmp/hold2.out")"
[ "${one:-99}" -le 4 ] || fail "one identity holds ${one:-?} connections (cap 4)"
[ "${manyo:-999}" -le 128 ] || fail "one address holds ${manyo:-?} connections (cap 128)"
conns="$(metric p3 gpugrid_connections cl)"
[ -n "$conns" ] || fail "/metrics is unreachable from another host while slots are held"
run slots "$tmp/c8" --peer "$url_p3"
[ "$code" -eq 0 ] || fail "a run from another host while slots are held exited $code: $(cat "$tmp/slots.err")"
figure "one identity got ${one:-?} of 50; one address got ${manyo:-?} of $many with fresh identities; /metrics from another host: $conns connections; a run got through in $ms ms"
kill "$h1" "$h2" 2>/dev/null
verdict

scenario "a provider stopped with SIGSTOP (learned by gossip)"
# The client names p2, p3 and p4; it learns the cheapest provider, st, from p2.
start st p5 7453 "$tmp/st" --price 0.00001 --peer "$url_p2" || exit 1
peers9=(--peer "$url_p2" --peer "$url_p3" --peer "$url_p4")
for _ in $(seq 1 40); do
  run st0 "$tmp/c9" "${peers9[@]}" --timeout 3 --json
  ms_st0=$ms
  grep -q "$(id_of st)" "$tmp/st0.out" && break
  sleep 0.1
done
grep -q "$(id_of st)" "$tmp/st0.out" || fail "the cheapest provider (learned by gossip) did not take a job"
kill -STOP "$pid_st"
times=()
for i in 1 2 3; do
  run st$i "$tmp/c9" "${peers9[@]}" --timeout 3 --json
  [ "$code" -eq 0 ] || fail "run $i with a stopped provider exited $code: $(cat "$tmp/st$i.err")"
  times+=("$ms")
done
# Later runs avoid the stopped provider: no run after the first waits for it.
[ "${times[1]}" -le 2000 ] && [ "${times[2]}" -le 2000 ] || fail "runs 2 and 3 with a stopped provider still took ${times[1]} and ${times[2]} ms"
run st_red "$tmp/c9" "${peers9[@]}" --timeout 3 --redundancy 3 --json
red_paid="$(grep -o '"paid":true' "$tmp/st_red.out" | wc -l)"
[ "$code" -eq 0 ] && [ "$red_paid" -eq 3 ] || fail "--redundancy 3 with one of four providers stopped: exit $code, $red_paid paid: $(cat "$tmp/st_red.err")"
red_ms=$ms
run st_red4 "$tmp/c9" "${peers9[@]}" --timeout 3 --redundancy 4 --json
red4_paid="$(grep -o '"paid":true' "$tmp/st_red4.out" | wc -l)"
said4="$(grep -o -- '--redundancy 4: only [0-9]* provider[s]* could run the job' "$tmp/st_red4.err" | head -1)"
[ "$code" -ne 0 ] || [ -n "$said4" ] || fail "--redundancy 4 ran on $red4_paid providers and said nothing: $(cat "$tmp/st_red4.err")"
kill -CONT "$pid_st"
stop "$pid_st"
figure "runs while it is stopped: ${times[*]} ms (before: $ms_st0 ms); --redundancy 3: $red_paid paid ($red_ms ms); --redundancy 4 with 3 live: exit $code, '${said4:-no note}'"
verdict

# ==================================================================== uploads, models and jobs
scenario "uploads announced but never sent, and finished but never executed"
rss() { awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$1/status"; }
# a) on p2 (default limits: a 1000 MiB model is allowed), 3 connections announce 1000 MiB each
#    and send one 64 KiB chunk.
r0="$(rss "$pid_p2")"
ip netns exec "$tag-ev" "$faulty" attack announce "$url_p2" 3 1000 3 >"$tmp/ann.out" 2>&1 &
a=$!
pids+=("$a")
for _ in $(seq 1 100); do [ -s "$tmp/ann.out" ] && break; sleep 0.1; done
sleep 0.5
r1="$(rss "$pid_p2")"
held1="$(metric p2 gpugrid_upload_bytes_held)"
grep -q "^announced 3 uploads" "$tmp/ann.out" || fail "the announcing attacker did not get its 3 uploads going: $(cat "$tmp/ann.out")"
[ "${held1%.*}" -le $((3 * 65536)) ] || fail "3 announced uploads of 1000 MiB hold $held1 bytes for 3 x 64 KiB sent"
[ $((r1 - r0)) -le 100 ] || fail "3 announced uploads of 1000 MiB grew the provider by $((r1 - r0)) MiB"
wait "$a" 2>/dev/null
# b) finished uploads that are never executed, on a provider with --max-model-mb 16 (an upload
#    budget of 32 MiB over the node).
start up p5 7454 "$tmp/up" --max-model-mb 16 || exit 1
r2a="$(rss "$pid_up")"
nup=$(big 10 20)
ip netns exec "$tag-ev" "$faulty" attack hold-uploads "$url_up" "$nup" 8 $(big 3 40) >"$tmp/hup.out" 2>&1 &
a=$!
pids+=("$a")
for _ in $(seq 1 300); do [ -s "$tmp/hup.out" ] && break; sleep 0.1; done
sleep 0.5
r2="$(rss "$pid_up")"
held2="$(metric up gpugrid_upload_bytes_held)"
[ "${held2%.*}" -le $((32 << 20)) ] || fail "$nup finished uploads of 8 MiB hold $held2 bytes (budget 32 MiB)"
[ $((r2 - r2a)) -le 150 ] || fail "$nup finished uploads of 8 MiB grew the provider by $((r2 - r2a)) MiB"
if [ "$long" = 1 ]; then
  sleep 33
  held3="$(metric up gpugrid_upload_bytes_held)"
  [ "${held3%.*}" -eq 0 ] || fail "finished, never executed uploads still hold $held3 bytes after 33 s"
  figure "after 33 s: $held3 bytes held"
fi
wait "$a" 2>/dev/null
figure "3 x 1000 MiB announced, 64 KiB sent: $held1 bytes held, RSS $r0 -> $r1 MiB; $nup x 8 MiB finished, never executed (--max-model-mb 16): $held2 bytes held, RSS $r2a -> $r2 MiB"
stop "$pid_up"
verdict

scenario "a job that declares tiny FLOPs; cancel when its client goes away"
if [ -n "$PY" ]; then
  layers=$(big 400 4000)
  gf="$("$PY" "$src/tests/tools/reliability_inputs.py" heavy "$tmp" "$layers")"
  start hv p5 7455 "$tmp/hv" || exit 1
  nsx ev "$faulty" attack client "$url_hv" "$tmp/heavy.onnx" "$tmp/heavy_x.npy" 1 --gflops 0.01 >"$tmp/tiny1.out" 2>&1
  nsx ev "$faulty" attack client "$url_hv" "$tmp/heavy.onnx" "$tmp/heavy_x.npy" 1 --gflops 0.01 >"$tmp/tiny2.out" 2>&1
  nsx cl "$faulty" attack client "$url_hv" "$tmp/heavy.onnx" "$tmp/heavy_x.npy" 1 --gflops "$gf" >"$tmp/full.out" 2>&1
  t_tiny="$(sed -n 's/.*first job \([0-9]*\) ms.*/\1/p' "$tmp/tiny1.out")"
  t_tiny2="$(sed -n 's/.*first job \([0-9]*\) ms.*/\1/p' "$tmp/tiny2.out")"
  t_full="$(sed -n 's/.*first job \([0-9]*\) ms.*/\1/p' "$tmp/full.out")"
  grep -q "^served 0 of 1" "$tmp/tiny1.out" || fail "a $gf GFLOP job declared as 0.01 GFLOP was served: $(cat "$tmp/tiny1.out")"
  grep -q "^served 0 of 1" "$tmp/tiny2.out" || fail "the repeat of the under-declared job was served: $(cat "$tmp/tiny2.out")"
  grep -q "^served 1 of 1" "$tmp/full.out" || fail "the honestly declared job was not served: $(cat "$tmp/full.out")"
  [ "${t_tiny:-99999}" -lt "${t_full:-0}" ] || fail "the under-declared job ran ${t_tiny:-?} ms, the whole job takes ${t_full:-?} ms"
  figure "$gf GFLOP declared as 0.01: stopped after ${t_tiny:-?} ms ('$(sed -n 's/^first error: //p' "$tmp/tiny1.out" | cut -c1-70)'), repeat after ${t_tiny2:-?} ms; declared honestly it runs ${t_full:-?} ms"
  # The client leaves 300 ms into an honestly declared job: the provider stops it.
  "$PY" "$src/tests/tools/reliability_inputs.py" heavy "$tmp" $((layers * 3)) >/dev/null
  t0=$(now_ms)
  nsx ev "$faulty" attack client "$url_hv" "$tmp/heavy.onnx" "$tmp/heavy_x.npy" 1 --gflops $(awk -v g="$gf" 'BEGIN { print 3 * g }') --leave-after-ms 300 >"$tmp/leave.out" 2>&1
  freed=""
  for _ in $(seq 1 200); do
    grep -q '"event":"job_failed".*went away' "$tmp/hv.log" && { freed=$(($(now_ms) - t0)); break; }
    sleep 0.05
  done
  [ -n "$freed" ] || fail "the provider did not stop the job of a client that went away: $(tail -2 "$tmp/hv.log")"
  inflight="$(metric hv gpugrid_jobs_in_flight)"
  [ "${inflight:-1}" -eq 0 ] || fail "the provider still holds $inflight jobs after their client left"
  figure "a $((3 * ${gf%.*})) GFLOP job whose client left after 300 ms stopped ${freed:-never} ms after it began"
  stop "$pid_hv"
  verdict
else
  figure "no Python with numpy and onnx to make the heavy model"
  verdict SKIP
fi

scenario "a model whose external data points into the provider's cache"
if [ -n "$PY" ]; then
  "$PY" "$src/tests/tools/reliability_inputs.py" extdata "$model" "$tmp/extdata.onnx"
  run victim "$tmp/c12" --peer "$url_p4"  # the victim's model is now in p4's cache
  ls "$tmp/p4/models/" 2>/dev/null | grep -q . || fail "the victim's model is not in the provider's cache"
  nsx ev "$faulty" attack client "$url_p4" "$tmp/extdata.onnx" "$sample" 1 >"$tmp/ext.out" 2>&1
  grep -q "^served 0 of 1" "$tmp/ext.out" || fail "a model reading another model's file was served: $(cat "$tmp/ext.out")"
  grep -q "external data" "$tmp/ext.out" || fail "the refusal does not name external data: $(cat "$tmp/ext.out")"
  ! grep -q -e "$tmp" -e "/models/" "$tmp/ext.out" || fail "the error shows the provider's path: $(cat "$tmp/ext.out")"
  figure "refused: '$(sed -n 's/^first error: //p' "$tmp/ext.out" | cut -c1-110)' (no path shown)"
  verdict
else
  figure "no Python with onnx to make the model"
  verdict SKIP
fi

# ================================================================================ verification
scenario "one corrupting provider among honest ones: same price, and half price with fresh clients"
liar_runs=$(big 8 60)
start l1 l1 7447 "$tmp/l1" --fault corrupt || exit 1
liar="$(id_of l1)"
# Two honest providers as new as the liar, and the model in all three caches (measured twice),
# so that their bids are equal: a fresh client's first job goes to any of them.
start h13a p3 7460 "$tmp/h13a" || exit 1
start h13b p4 7460 "$tmp/h13b" || exit 1
for u in "$url_l1" "$url_h13a" "$url_h13b"; do
  nsx cl "$faulty" attack client "$u" "$model" "$sample" 2 >/dev/null 2>&1
done
wrong_same=0 liar_paid=0 same_runs=0 rounds13=0 liar_rounds=0 reps=""
# Rounds of 3 runs, each round a new client. The short version stops after the round in
# which equal bids first gave the liar a job.
while [ "$rounds13" -lt "$(big 20 $((liar_runs / 3)))" ] && { [ "$long" = 1 ] || [ "$liar_rounds" -lt 1 ]; }; do
  rounds13=$((rounds13 + 1))
  jobs0="$(metric l1 gpugrid_jobs_total)"
  for k in 1 2 3; do
    i=$((same_runs + 1))
    run same$i "$tmp/c13_$rounds13" --peer "$url_l1" --peer "$url_h13a" --peer "$url_h13b" --json -o "$tmp/same$i.npy"
    same_runs=$i
    if [ "$code" -eq 0 ] && wrong same$i; then wrong_same=$((wrong_same + 1)); fi
    grep -q "\"$liar\"[^}]*\"paid\":true" "$tmp/same$i.out" && liar_paid=$((liar_paid + 1))
  done
  if [ "$(metric l1 gpugrid_jobs_total)" -gt "$jobs0" ]; then
    liar_rounds=$((liar_rounds + 1))
    rep="$(awk -v id="$liar" '$1 == id { print $2 }' "$tmp/c13_$rounds13/reputation.tsv" 2>/dev/null)"
    reps="${reps:+$reps }${rep:-?}"
    awk -v r="${rep:-1}" 'BEGIN { exit !(r < 0.2) }' || fail "after the liar's job its reputation is ${rep:-unknown}, not below the cut-off 0.2"
  fi
done
[ "$liar_rounds" -ge 1 ] || fail "equal bids never gave the liar a job in $rounds13 rounds: the scenario did not test it"
[ "$wrong_same" -eq 0 ] || fail "$wrong_same of $same_runs wrong answers accepted at the same price"
stop "$pid_h13a"
stop "$pid_h13b"
start l1h l1 7448 "$tmp/l1h" --fault corrupt --price 0.0005 || exit 1
liarh="$(id_of l1h)"
wrong_half=0 liar_half_paid=0 exit_half=""
for i in $(seq 1 "$liar_runs"); do
  run half$i "$tmp/c13h$i" --peer "$url_l1h" --peer "$url_p2" --peer "$url_p3" --json -o "$tmp/half$i.npy"
  exit_half="$exit_half$code"
  if [ "$code" -eq 0 ] && wrong half$i; then wrong_half=$((wrong_half + 1)); fi
  grep -q "\"$liarh\"[^}]*\"paid\":true" "$tmp/half$i.out" && liar_half_paid=$((liar_half_paid + 1))
done
[ "$wrong_half" -eq 0 ] || fail "$wrong_half of $liar_runs wrong answers accepted at half price with fresh client data dirs"
figure "same price, new clients, $same_runs runs in $rounds13 rounds: the liar got jobs in $liar_rounds rounds, $wrong_same wrong accepted, paid $liar_paid times, its reputation then ${reps:-?} (cut-off 0.2); half price, fresh client each run: $wrong_half of $liar_runs wrong accepted, liar paid $liar_half_paid times"
stop "$pid_l1"
stop "$pid_l1h"
verdict

scenario "two colluding identities (identical wrong answers, half price) against --redundancy 2"
cruns=$(big 4 30)
# A client verifies honest providers first (before the colluders exist): they become established.
for i in 1 2 3 4 5 6; do run warm14$i "$tmp/c14b" --peer "$url_p2" --peer "$url_p3" --redundancy 2; done
established="$(awk '!/^#/ && $3 >= 5' "$tmp/c14b/reputation.tsv" | wc -l)"
[ "$established" -ge 2 ] || fail "the warm-up established $established providers, not 2"
start ca l1 7449 "$tmp/ca" --fault corrupt --price 0.0005 || exit 1
start cb l2 7447 "$tmp/cb" --fault corrupt --price 0.0005 || exit 1
start cc l3 7447 "$tmp/cc" --fault corrupt --price 0.0005 || exit 1
# honest_lost NAME: honest providers that run NAME marked as disagreeing (a dispute against them).
honest_lost() { grep -o '"url":"ws://10.91.[345].1:7447"[^}]*"agreed":false' "$tmp/$1.out" | wc -l; }
disputed_a=0 disputed_b=0 disputed_c=0
# a) both on one /24, fresh clients
wrong_a=0 codes_a=""
for i in $(seq 1 "$cruns"); do
  run cola$i "$tmp/c14a$i" --peer "$url_ca" --peer "$url_cb" --peer "$url_p2" --peer "$url_p3" --redundancy 2 --json -o "$tmp/cola$i.npy"
  disputed_a=$((disputed_a + $(honest_lost cola$i)))
  codes_a="$codes_a$code"
  if [ "$code" -eq 0 ] && wrong cola$i; then wrong_a=$((wrong_a + 1)); fi
done
[ "$wrong_a" -eq 0 ] || fail "colluders on one /24: $wrong_a of $cruns wrong answers accepted"
# b) on two /24s, the client that verified honest providers before
wrong_b=0 codes_b=""
for i in $(seq 1 "$cruns"); do
  run colb$i "$tmp/c14b" --peer "$url_ca" --peer "$url_cc" --peer "$url_p2" --peer "$url_p3" --redundancy 2 --json -o "$tmp/colb$i.npy"
  disputed_b=$((disputed_b + $(honest_lost colb$i)))
  codes_b="$codes_b$code"
  if [ "$code" -eq 0 ] && wrong colb$i; then wrong_b=$((wrong_b + 1)); fi
done
[ "$wrong_b" -eq 0 ] || fail "colluders on two /24s against a client with history: $wrong_b of $cruns wrong answers accepted"
# c) on two /24s, fresh clients: every provider is new to them, so the two colluders may be the
#    pair; their agreement is checked on the client's engine (unverified providers, rate 1)
wrong_c=0
for i in $(seq 1 "$cruns"); do
  run colc$i "$tmp/c14c$i" --peer "$url_ca" --peer "$url_cc" --peer "$url_p2" --peer "$url_p3" --redundancy 2 --json -o "$tmp/colc$i.npy"
  disputed_c=$((disputed_c + $(honest_lost colc$i)))
  if [ "$code" -eq 0 ] && wrong colc$i; then wrong_c=$((wrong_c + 1)); fi
done
[ "$wrong_c" -eq 0 ] || fail "colluders on two /24s against fresh clients: $wrong_c of $cruns wrong answers accepted"
figure "wrong results accepted (and honest providers charged a dispute): one /24, fresh clients $wrong_a of $cruns ($disputed_a); two /24s, a client that had verified the honest ones $wrong_b of $cruns ($disputed_b); two /24s, fresh clients $wrong_c of $cruns ($disputed_c)"
stop "$pid_ca"
stop "$pid_cb"
stop "$pid_cc"
verdict

# ====================================================================== shutdown and messages
scenario "SIGINT to a provider mid-job"
export GPUGRID_FAULTY_DELAY_MS=2000
start sg p5 7456 "$tmp/sg" --fault slow --price 0.000001 || exit 1
unset GPUGRID_FAULTY_DELAY_MS
t0=$(now_ms)
ip netns exec "$tag-cl" "$bin" run "$model" "$sample" --data-dir "$tmp/c15" --peer "$url_sg" --peer "$url_p2" -o "$tmp/sig.npy" --json \
  >"$tmp/sig.out" 2>"$tmp/sig.err" </dev/null &
cpid=$!
wait_for_job sg || fail "the slow provider never got the job"
kill -INT "$pid_sg"
wait "$cpid"
code=$?
ms=$(($(now_ms) - t0))
[ "$code" -eq 0 ] || fail "the run whose provider got SIGINT exited $code: $(cat "$tmp/sig.err")"
wrong sig && fail "the result of the drained job differs from the local engine's"
grep -q "$(id_of sg)" "$tmp/sig.out" || fail "the job was not finished by the provider that got SIGINT: $(cat "$tmp/sig.out")"
for _ in $(seq 1 100); do alive "$pid_sg" || break; sleep 0.05; done
alive "$pid_sg" && fail "the provider did not stop after its job"
grep -q '"event":"stopped","handed_back":0' "$tmp/sg.log" || fail "the provider did not finish its job before stopping: $(tail -2 "$tmp/sg.log")"
figure "client exit $code with the right result from the interrupted provider in $ms ms; provider stopped, handed back 0"
verdict

scenario "diagnostics under nohup with stderr to a file"
ip netns exec "$tag-p5" nohup "$bin" offer --listen "${addr[p5]}:7457" --data-dir "$tmp/nh" >"$tmp/nh.out" 2>"$tmp/nh.err" </dev/null &
nh=$!
pids+=("$nh")
for _ in $(seq 1 100); do grep -q "listening" "$tmp/nh.err" 2>/dev/null && break; sleep 0.05; done
nsx cl nohup "$bin" run "$model" "$sample" --data-dir "$tmp/c16" --peer "ws://${addr[p5]}:7457" --redundancy 5 --min-redundancy 1 \
  -o "$tmp/nh.npy" >"$tmp/nhrun.out" 2>"$tmp/nhrun.err" </dev/null
code=$?
grep -q -- "--redundancy 5: only 1 provider could run the job" "$tmp/nhrun.err" || fail "the --redundancy warning is lost under nohup: $(cat "$tmp/nhrun.err")"
nsx cl nohup "$bin" -q run "$model" "$sample" --data-dir "$tmp/c16" --peer "ws://${addr[p5]}:7457" --redundancy 5 --min-redundancy 1 \
  -o "$tmp/nh2.npy" >"$tmp/nhq.out" 2>"$tmp/nhq.err" </dev/null
[ ! -s "$tmp/nhq.err" ] || fail "-q still prints: $(cat "$tmp/nhq.err")"
sleep 0.2
stamped="$(grep -c '20[0-9][0-9]-[0-9][0-9]-[0-9][0-9][T ][0-9][0-9]:[0-9][0-9]' "$tmp/nh.err")"
[ "$stamped" -ge 2 ] || fail "offer's event lines under nohup carry no timestamps: $(head -3 "$tmp/nh.err")"
grep -q "job" "$tmp/nh.err" || fail "offer's job events are lost under nohup: $(cat "$tmp/nh.err")"
stop "$nh"
figure "run (exit $code): '$(grep -m1 -o -- '--redundancy 5: only.*' "$tmp/nhrun.err" | cut -c1-60)'; -q: $(wc -c <"$tmp/nhq.err") bytes; offer: $stamped timestamped lines, e.g. '$(grep -m1 job "$tmp/nh.err" | cut -c1-70)'"
verdict

# =========================================================================== every node's ledger
scenario "ledger verify on every node's data dir"
nled=0
for d in "$tmp"/*/; do
  d="${d%/}"
  [ -f "$d/ledger.log" ] || continue
  [ "$d" = "$tmp/forged" ] && continue
  verify "$d" "$(basename "$d")"
  nled=$((nled + 1))
done
figure "$nled ledgers verified"
verdict

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "reliability suite: every scenario held"
