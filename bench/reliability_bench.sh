#!/usr/bin/env bash
# The long version of tests/reliability_test.sh: every attack and fault of the open-network list
# replayed in network namespaces with more rounds (20 SIGKILL rounds, 100 runs by a client that
# never countersigns, a 120 GFLOP job declared as 0.01, 60 runs against a corrupting provider,
# 30 runs per collusion case, uploads held past their expiry, ...). Needs root.
# Writes bench/results/reliability-<UTC date>.md: the machine, the date, the commit and one row
# per scenario with its figures, PASS or FAIL. Exit: the suite's (0 when every scenario held).
# Usage: bench/reliability_bench.sh path/to/gpugrid path/to/source
set -uo pipefail
if [ $# -lt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 path/to/gpugrid path/to/source" >&2
  exit 2
fi
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
src="$(cd "$2" && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "reliability_bench: needs root (network namespaces)" >&2; exit 2; }
day="$(date -u +%Y-%m-%d)"
out="$src/bench/results/reliability-$day.md"
rows="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$rows" "$log"' EXIT
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s)
RELIABILITY_LONG=1 RELIABILITY_REPORT="$rows" bash "$src/tests/reliability_test.sh" "$bin" "$src" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
secs=$(($(date +%s) - t0))
{
  echo "# Reliability suite, long version — $day"
  echo
  echo "\`bench/reliability_bench.sh\` (\`RELIABILITY_LONG=1 tests/reliability_test.sh\`) at commit"
  echo "$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%H:%M) UTC. Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'),"
  echo "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), no GPU used; load average $load0 before the run"
  echo "(the machine is shared with other builds, so times are upper bounds). Every node is a"
  echo "network namespace with its own address on one bridge (10.91.0.0/16, hosts on several /24"
  echo "networks); providers are \`gpugrid offer\`, clients \`gpugrid run\`, misbehaving peers the"
  echo "\`gpugrid-faulty\` test double. Model: \`examples/digits/digits.onnx\` unless the row says."
  echo "Whole run: $secs s, exit $code."
  echo
  echo "| # | scenario | figures | held |"
  echo "|---|---|---|---|"
  cat "$rows"
  echo
  echo "Failures as printed by the suite:"
  echo
  echo '```'
  grep '^FAIL' "$log" || echo "(none)"
  echo '```'
} >"$out"
echo "reliability_bench: wrote $out"
exit "$code"
