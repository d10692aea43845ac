#!/usr/bin/env bash
# Ledger and payment faults over real processes on loopback: two offers on one data dir, four
# runs sharing one client data dir, a provider whose ledger file cannot grow (file-size limit)
# mid-run, providers killed with SIGKILL while clients pay them, and --redundancy paying every
# agreeing provider. Every ledger must verify afterwards, and every payment the client holds
# must reach its provider's ledger (redelivered from the client's outbox when needed).
# Usage: tests/ledger_reliability_test.sh path/to/gpugrid path/to/source
# LEDGER_PARALLEL_RUNS (default 4) and LEDGER_KILL_ROUNDS (default 3) scale it up
# (bench/ledger_faults.sh runs the long version).
source "$2/tests/lib/loopback_grid.sh" "$@"
record=421  # bytes of one ledger record (ledger/ledger.cc)
par="${LEDGER_PARALLEL_RUNS:-4}"
rounds="${LEDGER_KILL_ROUNDS:-3}"

# start_provider NAME DIR [ARGS...]: `gpugrid offer` on a free loopback port, its output through
# pipes (so that a file-size limit on the provider, $fsize in 1024-byte blocks when set, does not
# apply to its logs); sets url_NAME and pid_NAME.
start_provider() {
  local name="$1" dir="$2"
  shift 2
  # Started outside this shell's jobs, so that killing it prints nothing.
  ( ( if [ -n "${fsize:-}" ]; then ulimit -f "$fsize"; fi
      exec "$bin" offer --listen 127.0.0.1:0 --data-dir "$dir" --json "$@" ) \
      > >(cat >"$tmp/$name.log") 2> >(cat >"$tmp/$name.err") </dev/null &
    echo $! >"$tmp/$name.pid" )
  local pid
  pid="$(cat "$tmp/$name.pid")"
  pids+=("$pid")
  local url=""
  for _ in $(seq 1 100); do
    url="$(sed -n 's/.*"event":"listening".*"url":"\([^"]*\)".*/\1/p' "$tmp/$name.log" 2>/dev/null | head -1)"
    [ -n "$url" ] && break
    alive "$pid" || break
    sleep 0.05
  done
  if [ -z "$url" ]; then
    fail "provider $name did not start: $(cat "$tmp/$name.err")"
    return 1
  fi
  printf -v "url_$name" '%s' "$url"
  printf -v "pid_$name" '%s' "$pid"
}
stop() { kill -"${2:-TERM}" "$1" 2>/dev/null; for _ in $(seq 1 100); do alive "$1" || return 0; sleep 0.05; done; kill -9 "$1" 2>/dev/null; }

# run_job NAME DIR ARGS...: one `gpugrid run` with the client data dir DIR; sets $code.
run_job() {
  local name="$1" dir="$2"
  shift 2
  "$bin" run "$model" "$sample" --data-dir "$dir" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null
  code=$?
}
source "$2/tests/lib/ledger_checks.sh"

# ---- 1. a data dir is locked: a second offer on it stops at once with one line
start_provider p1 "$tmp/p1" || exit 1
"$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/p1" >"$tmp/dup.out" 2>"$tmp/dup.err" </dev/null &
dup=$!
pids+=("$dup")
for _ in $(seq 1 100); do alive "$dup" || break; sleep 0.05; done
if alive "$dup"; then
  fail "a second offer on one data dir is still running"
else
  wait "$dup"
  dup_code=$?
  [ "$dup_code" -eq 2 ] || fail "a second offer on one data dir exited $dup_code, not 2"
  [ "$(wc -l <"$tmp/dup.err")" -eq 1 ] && grep -q "in use" "$tmp/dup.err" ||
    fail "a second offer on one data dir said: $(cat "$tmp/dup.err")"
fi
p1_id="$(node_id "$tmp/p1")"

# ---- 2. runs sharing one client data dir at once: all paid, one clean chain
run_job warm "$tmp/client" --peer "$url_p1"
[ "$code" -eq 0 ] || fail "the first run exited $code: $(cat "$tmp/warm.err")"
rpids=()
t0=$(date +%s%N)
for i in $(seq 1 "$par"); do
  "$bin" run "$model" "$sample" --data-dir "$tmp/client" --peer "$url_p1" >"$tmp/par$i.out" 2>"$tmp/par$i.err" </dev/null &
  rpids+=("$!")
done
for i in $(seq 1 "$par"); do
  wait "${rpids[$((i - 1))]}" || fail "parallel run $i exited $?: $(cat "$tmp/par$i.err")"
done
par_ms=$((($(date +%s%N) - t0) / 1000000))
verify "$tmp/client" "client after $par parallel runs"
n="$(count "$(jobs_of "$tmp/client")")"
[ "$n" -eq $((par + 1)) ] || fail "the client ledger holds $n payments after $((par + 1)) runs"

# ---- 3. the provider's ledger file cannot grow: it stops taking jobs and says so; nothing torn
stop "$pid_p1"
verify "$tmp/p1" "provider before the size limit"
size="$(stat -c %s "$tmp/p1/ledger.log")"
[ $((size % record)) -eq 0 ] || fail "provider ledger size $size is not whole records"
# Room for one or a few more records and part of the next (ulimit -f counts 1024-byte blocks).
fsize=$(((size + record + record / 2 + 1023) / 1024))
start_provider p1b "$tmp/p1" || exit 1
fsize=""
refused=0
for i in 1 2 3 4 5 6; do
  run_job full$i "$tmp/client" --peer "$url_p1b"
  if [ "$code" -ne 0 ]; then
    refused=$i
    [ "$code" -eq 3 ] || fail "a run against a provider with a full ledger exited $code, not 3"
    grep -q "cannot record payments" "$tmp/full$i.err" || fail "the refusal does not say why: $(cat "$tmp/full$i.err")"
    break
  fi
done
[ "$refused" -gt 1 ] || fail "the provider with a full ledger took no job at all, or every job ($refused)"
alive "$pid_p1b" || fail "the provider with a full ledger died"
grep -q "cannot record payments" "$tmp/p1b.err" || fail "the provider did not say that it cannot record payments: $(cat "$tmp/p1b.err")"
stop "$pid_p1b"
size="$(stat -c %s "$tmp/p1/ledger.log")"
[ $((size % record)) -eq 0 ] || fail "after the failed write the provider ledger is $size bytes: a fragment was left"
verify "$tmp/p1" "provider after its ledger filled"
[ -s "$tmp/client/receipts.pending" ] || fail "the client keeps no receipt for the provider that could not record it"
# Room again: the provider starts, and the client's next run delivers the receipt it kept.
start_provider p1c "$tmp/p1" || exit 1
run_job after "$tmp/client" --peer "$url_p1c"
[ "$code" -eq 0 ] || fail "the run after the ledger had room again exited $code: $(cat "$tmp/after.err")"
[ "$(jobs_of "$tmp/client" "$p1_id")" = "$(jobs_of "$tmp/p1")" ] ||
  fail "after redelivery the provider ledger holds $(count "$(jobs_of "$tmp/p1")") of the client's $(count "$(jobs_of "$tmp/client" "$p1_id")") payments"
[ ! -s "$tmp/client/receipts.pending" ] || fail "receipts are still pending after redelivery"
verify "$tmp/p1" "provider after redelivery"
stop "$pid_p1c"

# ---- 4. providers killed with SIGKILL while clients pay them: no payment lost
pending_sum=0  # receipts the client held unacknowledged after each kill (sent again next round)
for round in $(seq 1 "$rounds"); do
  start_provider k$round "$tmp/p1" || exit 1
  url_var="url_k$round"
  ( for i in 1 2 3 4 5 6; do
      "$bin" run "$model" "$sample" --data-dir "$tmp/client" --peer "${!url_var}" --timeout 5 >/dev/null 2>&1 </dev/null
    done ) &
  loop=$!
  sleep "$(printf '0.%03d' $((200 + RANDOM % 700)))"  # anywhere in a run, the payment included
  pid_var="pid_k$round"
  stop "${!pid_var}" 9  # SIGKILL, then wait until it is gone (and its data-dir lock with it)
  wait "$loop"
  pending_sum=$((pending_sum + $(stat -c %s "$tmp/client/receipts.pending" 2>/dev/null || echo 0) / 337))
done
start_provider k0 "$tmp/p1" || exit 1
run_job settle "$tmp/client" --peer "$url_k0"
[ "$code" -eq 0 ] || fail "the run after the kills exited $code: $(cat "$tmp/settle.err")"
verify "$tmp/client" "client after the kills"
verify "$tmp/p1" "provider after the kills"
cj="$(jobs_of "$tmp/client" "$p1_id")"
pj="$(jobs_of "$tmp/p1")"
[ "$cj" = "$pj" ] || fail "after SIGKILLs the provider ledger holds $(count "$pj") payments, the client's $(count "$cj"): $(comm -3 <(echo "$cj") <(echo "$pj") | head -3)"

# ---- 5. --redundancy 3: every agreeing provider is paid
start_provider p2 "$tmp/p2" --peer "$url_k0" || exit 1
start_provider p3 "$tmp/p3" --peer "$url_k0" || exit 1
for _ in $(seq 1 60); do
  "$bin" peers --peer "$url_k0" --data-dir "$tmp/client" --json >"$tmp/peers.json" 2>/dev/null
  [ "$(grep -o '"node_id"' "$tmp/peers.json" | wc -l)" -ge 3 ] && break
  sleep 0.1
done
before="$(count "$(jobs_of "$tmp/client")")"
run_job red "$tmp/client" --peer "$url_k0" --redundancy 3 --json
[ "$code" -eq 0 ] || fail "the --redundancy 3 run exited $code: $(cat "$tmp/red.err")"
[ "$(grep -o '"paid":true' "$tmp/red.out" | wc -l)" -eq 3 ] || fail "--redundancy 3 paid $(grep -o '"paid":true' "$tmp/red.out" | wc -l) providers, not 3"
after="$(count "$(jobs_of "$tmp/client")")"
[ "$after" -eq $((before + 3)) ] || fail "--redundancy 3 left $((after - before)) receipts in the client ledger, not 3"
for n in p2 p3; do
  [ "$(count "$(jobs_of "$tmp/$n")")" -eq 1 ] || fail "provider $n was not paid for its part of the redundant job"
  verify "$tmp/$n" "provider $n"
done
verify "$tmp/client" "client at the end"

echo "figures: $par runs sharing a data dir in ${par_ms} ms; full ledger: job $refused refused;" \
  "$rounds SIGKILL rounds: $pending_sum receipts left unacknowledged by a kill, client $(count "$cj") / provider $(count "$pj") payments after redelivery"
[ "$failures" -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "ledger reliability: all checks held"
