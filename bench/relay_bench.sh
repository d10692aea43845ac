#!/usr/bin/env bash
# A job through a relay against the same job over a direct connection, in network namespaces on
# one machine (veth links, no added delay): latency of a small job (the digit classifier, model
# cached after the first run) and throughput of a large one (a generated model with a 32 MiB
# weight that the provider must receive, and 32 MiB of output that comes back). Needs root.
# Writes bench/results/relay-<date>.md with the machine and date.
# Usage: bench/relay_bench.sh path/to/gpugrid path/to/source [RUNS]
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$(cd "$2" && pwd)"
runs="${3:-15}"
[ "$(id -u)" -eq 0 ] || { echo "relay_bench: needs root (network namespaces)" >&2; exit 2; }
tag="gb$$"
tmp="$(mktemp -d)"
pids=()
spaces=(sw relay direct cl nat p)
source "$src/tests/lib/netns.sh"
trap netns_cleanup EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home"
unset GPUGRID_PEERS
fail_setup() { echo "relay_bench: $netns_error" >&2; exit 1; }
netns_create || fail_setup
for h in relay:1 direct:2 cl:9 nat:11; do
  netns_public "${h%%:*}" "10.89.0.${h##*:}" || fail_setup
done
netns_private p nat 10.3.0 || fail_setup

# The large job: Y = X + W with W a 32 MiB float weight.
py="$src/.venv/bin/python3"
[ -x "$py" ] || py=python3
"$py" - "$tmp" <<'EOF' || { echo "relay_bench: cannot generate the large model (needs numpy and onnx)" >&2; exit 1; }
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
n = 8 << 20
w = numpy_helper.from_array(np.arange(n, dtype=np.float32) % 1000, "W")
g = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"])], "big",
                      [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n])], [w])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), sys.argv[1] + "/big.onnx")
np.save(sys.argv[1] + "/x.npy", np.array([1.0], dtype=np.float32))
EOF

start() {
  local ns="$1" name="$2"
  shift 2
  nsx "$ns" "$bin" offer --data-dir "$tmp/$name" --json "$@" >"$tmp/$name.log" 2>"$tmp/$name.err" &
  pids+=("$!")
}
start relay relay --listen 0.0.0.0:7447 --relay --price 1
start direct direct --listen 0.0.0.0:7447 --price 0.001
sleep 0.5
start p hidden --listen 0.0.0.0:7447 --price 0.001 --via-relay ws://10.89.0.1:7447
for _ in $(seq 1 200); do grep -q '"event":"behind_nat"' "$tmp/hidden.log" && break; sleep 0.05; done
grep -q '"event":"behind_nat"' "$tmp/hidden.log" || { echo "relay_bench: the provider did not attach: $(cat "$tmp/hidden.err")" >&2; exit 1; }
id_hidden="$(sed -n 's/.*"event":"listening".*"node_id":"\([^"]*\)".*/\1/p' "$tmp/hidden.log" | head -1)"
url_direct="ws://10.89.0.2:7447"
url_relay="ws://10.89.0.1:7447/relay/$id_hidden"

# time_run LABEL URL MODEL INPUT: milliseconds per run (a whole `gpugrid run` process) into
# $tmp/LABEL.ms; the first run (model upload) is timed separately into $tmp/LABEL.first.
time_run() {
  local label="$1" url="$2" m="$3" x="$4" k
  : >"$tmp/$label.ms"
  for k in $(seq 0 "$runs"); do
    local t0 t1
    t0=$(date +%s%N)
    nsx cl "$bin" run "$m" "$x" --peer "$url" --data-dir "$tmp/client-$label" --max-price 0.5 -o "$tmp/out-$label.npy" \
      >/dev/null 2>"$tmp/$label.err" || { echo "relay_bench: $label run failed: $(cat "$tmp/$label.err")" >&2; exit 1; }
    t1=$(date +%s%N)
    if [ "$k" -eq 0 ]; then echo $(((t1 - t0) / 1000000)) >"$tmp/$label.first"
    else echo $(((t1 - t0) / 1000000)) >>"$tmp/$label.ms"; fi
  done
}
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
p90() { sort -n "$1" | awk '{ a[NR] = $1 } END { i = int(NR * 0.9 + 0.5); if (i < 1) i = 1; print a[i] }'; }

model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"
time_run small-direct "$url_direct" "$model" "$sample"
time_run small-relay "$url_relay" "$model" "$sample"
runs_saved="$runs"
runs=3
time_run big-direct "$url_direct" "$tmp/big.onnx" "$tmp/x.npy"
time_run big-relay "$url_relay" "$tmp/big.onnx" "$tmp/x.npy"
runs="$runs_saved"
cmp -s "$tmp/out-big-direct.npy" "$tmp/out-big-relay.npy" || { echo "relay_bench: the outputs differ" >&2; exit 1; }

mb=64  # 32 MiB model up (first run only) + 32 MiB output down
first_d="$(cat "$tmp/big-direct.first")"
first_r="$(cat "$tmp/big-relay.first")"
rt_d="$(median "$tmp/big-direct.ms")"
rt_r="$(median "$tmp/big-relay.ms")"
day="$(date -u +%Y-%m-%d)"
out="$src/bench/results/relay-$day.md"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
{
  echo "# A job through a relay against a direct connection ($day)"
  echo
  echo "Machine: $cpu, $(nproc) cores visible, $(uname -sr). Network namespaces joined by veth pairs and a"
  echo "bridge, no added delay; the relayed provider sits behind an iptables MASQUERADE NAT. Each figure is"
  echo "a whole \`gpugrid run\` process (start-up, discovery, bid, upload if needed, execute, receipt), run"
  echo "from a client namespace; \`bench/relay_bench.sh build/gpugrid . $runs\`."
  echo
  echo "| job | direct | through the relay |"
  echo "|---|---|---|"
  echo "| digits classifier, model cached: median / p90 of $runs runs (ms) | $(median "$tmp/small-direct.ms") / $(p90 "$tmp/small-direct.ms") | $(median "$tmp/small-relay.ms") / $(p90 "$tmp/small-relay.ms") |"
  echo "| 32 MiB model uploaded + 32 MiB output, first run (ms) | $first_d | $first_r |"
  echo "| same model cached, 32 MiB output: median of 3 (ms) | $rt_d | $rt_r |"
  echo "| throughput of the first run, 64 MiB moved (MiB/s) | $(awk -v t="$first_d" -v m=$mb 'BEGIN { printf "%.0f", m / (t / 1000) }') | $(awk -v t="$first_r" -v m=$mb 'BEGIN { printf "%.0f", m / (t / 1000) }') |"
} >"$out"
cat "$out"
