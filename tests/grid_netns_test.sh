#!/usr/bin/env bash
# The grid across several "hosts": network namespaces joined by veth pairs to a bridge, with
# `tc netem` delay and loss on every link. Needs root (CAP_NET_ADMIN): skipped (exit 77) with a
# message otherwise. Without the netem qdisc (kernel module sch_netem) the namespaces still
# run, with a note, and the delay check is left out.
# Usage: tests/grid_netns_test.sh path/to/gpugrid path/to/source
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$2"
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip)"
command -v tc >/dev/null || skip "needs tc"

tag="gg$$"
hosts=(a b c d)
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  for h in "${hosts[@]}"; do ip netns del "$tag-$h" 2>/dev/null; done
  ip netns del "$tag-sw" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS

# A switch namespace with a bridge; each host is a namespace with a veth into the bridge.
netem=1
ip netns add "$tag-sw" 2>/dev/null || skip "cannot create network namespaces here"
ip -n "$tag-sw" link add br0 type bridge || skip "cannot create a bridge"
ip -n "$tag-sw" link set br0 up
i=1
for h in "${hosts[@]}"; do
  ip netns add "$tag-$h" || skip "cannot create namespace $tag-$h"
  ip link add "v$tag$h" netns "$tag-$h" type veth peer name "s$tag$h" netns "$tag-sw" || skip "cannot create veth pairs"
  ip -n "$tag-sw" link set "s$tag$h" master br0 up
  ip -n "$tag-$h" addr add "10.77.0.$i/24" dev "v$tag$h"
  ip -n "$tag-$h" link set "v$tag$h" up
  ip -n "$tag-$h" link set lo up
  # 10 ms each way (20 ms round trip between two hosts) with 1% loss.
  if [ "$netem" -eq 1 ] && ! ip netns exec "$tag-$h" tc qdisc add dev "v$tag$h" root netem delay 10ms loss 1% 2>/dev/null; then
    echo "NOTE: tc netem is not available (kernel module sch_netem): links run without delay and loss"
    netem=0
  fi
  i=$((i + 1))
done
# Reachability without ping: a closed port on host a answers "connection refused".
reach="$(ip netns exec "$tag-c" timeout 5 bash -c 'exec 3<>/dev/tcp/10.77.0.1/9' 2>&1)"
[[ "$reach" == *refused* ]] || skip "the namespaces cannot reach each other: $reach"

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"
"$bin" run "$model" "$sample" --local -o "$tmp/local.npy" || { echo "FAIL: --local run failed" >&2; exit 1; }

# Providers on hosts a, b and d (b and d know only a); the client on host c knows only a.
start() {
  local h="$1"
  shift
  ip netns exec "$tag-$h" "$bin" offer --data-dir "$tmp/$h" --json "$@" >"$tmp/$h.log" 2>"$tmp/$h.err" &
  pids+=("$!")
}
start a --listen 10.77.0.1:7447
sleep 0.5
start b --listen 0.0.0.0:7447 --peer ws://10.77.0.1:7447
start d --listen 10.77.0.4:7447 --peer ws://10.77.0.1:7447
found=0
for _ in $(seq 1 50); do
  ip netns exec "$tag-c" "$bin" peers --peer ws://10.77.0.1:7447 --data-dir "$tmp/client" --json >"$tmp/peers.json" 2>"$tmp/peers.err"
  found="$(grep -c '"node_id"' "$tmp/peers.json")"
  [ "$found" -ge 3 ] && break
  sleep 0.2
done
[ "$found" -eq 3 ] || fail "the client on host c found $found providers, not 3: $(cat "$tmp/peers.err")"
# b listens on every address: the others must learn it as 10.77.0.2, where they reached it.
grep -q '"url":"ws://10.77.0.2:7447"' "$tmp/peers.json" || fail "provider b is not listed at its reachable address: $(cat "$tmp/peers.json")"
rtt="$(sed -n 's/.*"url":"ws:\/\/10.77.0.1:7447".*"rtt_ms":\([0-9.]*\).*/\1/p' "$tmp/peers.json")"
[ "$netem" -eq 0 ] || awk -v r="${rtt:-0}" 'BEGIN { exit !(r >= 15) }' || fail "round trip to host a is ${rtt:-unknown} ms; netem adds 20"

for k in 1 2 3; do
  ip netns exec "$tag-c" "$bin" run "$model" "$sample" --peer ws://10.77.0.1:7447 --data-dir "$tmp/client" \
    -o "$tmp/grid$k.npy" --json >"$tmp/run$k.out" 2>"$tmp/run$k.err"
  code=$?
  [ "$code" -eq 0 ] || fail "run $k across namespaces exited $code: $(cat "$tmp/run$k.err")"
  cmp -s "$tmp/local.npy" "$tmp/grid$k.npy" || fail "run $k across namespaces differs from --local"
done
ip netns exec "$tag-c" "$bin" run "$model" "$sample" --peer ws://10.77.0.1:7447 --data-dir "$tmp/client" \
  --redundancy 2 -o "$tmp/grid4.npy" >"$tmp/run4.out" 2>"$tmp/run4.err"
[ $? -eq 0 ] || fail "redundant run across namespaces failed: $(cat "$tmp/run4.err")"
cmp -s "$tmp/local.npy" "$tmp/grid4.npy" || fail "redundant run across namespaces differs from --local"
"$bin" ledger verify --data-dir "$tmp/client" >/dev/null 2>&1 || fail "client ledger does not verify"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
[ "$netem" -eq 1 ] && echo "grid across network namespaces with netem: all checks passed" ||
  echo "grid across network namespaces (no netem): all checks passed"
