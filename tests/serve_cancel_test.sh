#!/usr/bin/env bash
# `gpugrid serve`: a /v2 infer request whose HTTP client goes away while its job runs is
# cancelled end to end. A slow provider (gpugrid-faulty slow: each job waits
# GPUGRID_FAULTY_DELAY_MS before it runs, and stops early when cancelled) gets the job; the
# client (curl) is killed; the provider's job must end well before the delay would have, and
# nothing is paid or recorded on either side.
# Usage: tests/serve_cancel_test.sh path/to/gpugrid path/to/source
source "$2/tests/lib/loopback_grid.sh" "$@"
faulty="$(dirname "$bin")/gpugrid-faulty"
[ -x "$faulty" ] || { echo "SKIP: $faulty is not built (configure with -DGPUGRID_TESTS=ON)"; exit 77; }
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
now_ms() { date +%s%3N; }
delay_ms=8000

# The slow provider, through the shared start_provider (which runs $bin offer ...).
printf '#!/bin/sh\nexec "%s" slow "$@"\n' "$faulty" >"$tmp/slow-gpugrid"
chmod +x "$tmp/slow-gpugrid"
real_bin="$bin"
bin="$tmp/slow-gpugrid"
export GPUGRID_FAULTY_DELAY_MS=$delay_ms
start_provider slow || exit 1
unset GPUGRID_FAULTY_DELAY_MS
bin="$real_bin"

mkdir -p "$tmp/models"
cp "$model" "$tmp/models/"
start_serve --models "$tmp/models" --peer "$url_slow" --data-dir "$tmp/client" || exit 1
addr=$serve_addr

body='{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":['"$(seq -s, 0 63)"']}]}'
curl -s -o "$tmp/answer.json" -X POST "http://$addr/v2/models/digits/infer" -d "$body" &
curl_pid=$!
held=0
for _ in $(seq 1 200); do
  [ "$(metric slow gpugrid_jobs_in_flight)" = 1 ] && { held=1; break; }
  sleep 0.05
done
[ "$held" = 1 ] || fail "the slow provider never got the job"
t0=$(now_ms)
kill -9 "$curl_pid"
wait "$curl_pid" 2>/dev/null
stopped_ms=""
for _ in $(seq 1 100); do
  if [ "$(metric slow gpugrid_jobs_in_flight)" = 0 ]; then stopped_ms=$(($(now_ms) - t0)); break; fi
  sleep 0.05
done
[ -n "$stopped_ms" ] || fail "the provider's job still runs 5 s after its client went away (the delay is $delay_ms ms)"
[ -n "$stopped_ms" ] && [ "$stopped_ms" -lt 3000 ] || fail "the provider's job ended $stopped_ms ms after the client went away"
failed="$(metric slow gpugrid_job_failures_total)"
[ "${failed:-0}" -ge 1 ] || fail "the provider does not count the cancelled job as failed (gpugrid_job_failures_total ${failed:-none})"
sleep 0.3
cancelled="$(curl -s "http://$addr/metrics" | awk '$1 == "gpugrid_serve_cancelled_total" { print $2 }')"
[ "$cancelled" = 1 ] || fail "serve's gpugrid_serve_cancelled_total is ${cancelled:-missing}, not 1"
# Nothing paid: neither ledger holds a receipt for the job.
for d in "$tmp/slow" "$tmp/client"; do
  n="$("$bin" ledger show --data-dir "$d" --json 2>/dev/null | grep -c '"job_id"')"
  [ "$n" = 0 ] || fail "$(basename "$d")'s ledger holds $n entries after a cancelled job"
done
# The server serves on.
code="$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/health/ready")"
[ "$code" = 200 ] || fail "serve is not ready after the cancelled request ($code)"
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "serve did not exit 0 after SIGTERM"

[ "$failures" -eq 0 ] || exit 1
echo "serve_cancel_test: all checks passed (the provider's job ended ${stopped_ms} ms after its client was killed; delay ${delay_ms} ms)"
