#!/usr/bin/env bash
# Attacks from an open network, replayed on loopback against real `gpugrid offer` processes
# (short version; bench/grid_attack_bench.sh runs more rounds and records figures):
#   1. one PeerExchange of 10,000 fake peers at a silent listener: the provider stays on the
#      grid, its table stays bounded, its neighbour is not poisoned, runs stay fast;
#   2. one identity opening 50 connections: it gets 4, clients and /metrics still get in;
#   3. announced 1000 MiB uploads with one chunk sent: the provider holds only what arrived.
# Usage: tests/grid_attack_test.sh path/to/gpugrid path/to/source
# GPUGRID_ATTACK_ROUNDS: runs after the flood (default 3).
source "$2/tests/lib/loopback_grid.sh" "$@"
faulty="$(dirname "$bin")/gpugrid-faulty"
[ -x "$faulty" ] || { echo "SKIP: $faulty is not built (configure with -DGPUGRID_TESTS=ON)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 (for a silent listener) is missing"; exit 77; }

rss_mb() { awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
# run_timed NAME: a grid run through boot; sets code and ms.
run_timed() {
  local t0
  t0=$(now_ms)
  "$bin" run "$model" "$sample" --peer "$url_boot" --data-dir "$tmp/client" -o "$tmp/$1.npy" >"$tmp/$1.out" 2>"$tmp/$1.err" </dev/null
  code=$?
  ms=$(($(now_ms) - t0))
}

# A listener that accepts TCP connections into its backlog and never answers.
python3 -c 'import socket,time,sys
s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(1024); print(s.getsockname()[1]); sys.stdout.flush(); time.sleep(600)' >"$tmp/silent.port" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$tmp/silent.port" ] && break; sleep 0.05; done
silent="$(cat "$tmp/silent.port")"

start_provider boot || exit 1
start_provider next --peer "$url_boot" || exit 1
sleep 0.3
run_timed baseline
[ "$code" -eq 0 ] || fail "baseline run exited $code: $(cat "$tmp/baseline.err")"
base_ms=$ms

# ---- 1. gossip flood
out="$("$faulty" attack flood-peers "$url_boot" 10000 "$silent")"
echo "flood: $out"
sleep 0.5
known="$(metric boot gpugrid_peers_known)"
[ -n "$known" ] || fail "the flooded provider no longer answers /metrics"
[ "${known:-99999}" -le 300 ] || fail "the flooded provider holds $known peers (at most 256 from one source + the grid)"
known_next="$(metric next gpugrid_peers_known)"
[ "${known_next:-99999}" -le 10 ] || fail "the flooded provider's neighbour was poisoned: it knows $known_next peers"
rounds="${GPUGRID_ATTACK_ROUNDS:-3}"
worst=0
for i in $(seq 1 "$rounds"); do
  run_timed "flood$i"
  [ "$ms" -gt "$worst" ] && worst=$ms
  [ "$code" -eq 0 ] || fail "run $i after the flood exited $code: $(cat "$tmp/flood$i.err")"
  [ "$ms" -le $((base_ms + 3000)) ] || fail "run $i after the flood took $ms ms (baseline $base_ms ms)"
done
echo "flood: peers known $known (neighbour $known_next); $rounds runs, slowest ${worst} ms (baseline $base_ms ms)"

# ---- 2. one identity holding connection slots
"$faulty" attack hold-slots "$url_boot" 50 6 >"$tmp/hold.out" &
hold=$!
pids+=("$hold")
for _ in $(seq 1 100); do [ -s "$tmp/hold.out" ] && break; sleep 0.1; done
echo "hold-slots: $(cat "$tmp/hold.out")"
grep -q "^opened 4 of 50" "$tmp/hold.out" || fail "one identity held more than 4 connections: $(cat "$tmp/hold.out")"
[ -n "$(metric boot gpugrid_connections)" ] || fail "/metrics unreachable while one identity holds slots"
run_timed hold
[ "$code" -eq 0 ] || fail "run while one identity holds slots exited $code: $(cat "$tmp/hold.err")"
kill "$hold" 2>/dev/null

# ---- 3. announced uploads never sent
rss0="$(rss_mb "$pid_boot")"
"$faulty" attack announce "$url_boot" 3 1000 3 >"$tmp/announce.out" &
ann=$!
pids+=("$ann")
for _ in $(seq 1 100); do [ -s "$tmp/announce.out" ] && break; sleep 0.1; done
sleep 0.5
rss1="$(rss_mb "$pid_boot")"
held="$(metric boot gpugrid_upload_bytes_held)"
echo "announce: $(cat "$tmp/announce.out"); RSS $rss0 -> $rss1 MiB; upload bytes held $held"
[ "$((rss1 - rss0))" -le 200 ] || fail "three announced 1000 MiB uploads grew the provider by $((rss1 - rss0)) MiB"
[ "${held%.*}" -le $((3 * 65536)) ] || fail "the provider holds $held upload bytes for 3 x 64 KiB sent"
wait "$ann" 2>/dev/null

kill -0 "$pid_boot" 2>/dev/null || fail "the attacked provider died"
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "grid attacks: all held"
