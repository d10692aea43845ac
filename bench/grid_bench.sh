#!/usr/bin/env bash
# The grid layer's benchmarks, in one run:
#   1. grid_bench (bench/grid_bench.cc): overhead of a job over the engine for a tiny cached
#      model in a persistent client, throughput over 4 in-process providers, a 100-provider
#      auction, 200-node membership;
#      and the same for a persistent client that reuses standing bids (--standing);
#   2. throughput again against 4 real `gpugrid offer` processes (the client's CPU alone);
#   3. the whole command line: `gpugrid run` on the embedded grid against `gpugrid run --local`.
#
#   bench/grid_bench.sh BUILD_DIR [OUT_DIR]
#
# BUILD_DIR is a configured CMake build tree; OUT_DIR (default BUILD_DIR/grid_bench) receives
# grid_bench.json, grid_bench_standing.json, grid_bench_external.json and cli.json. JOBS sets the build's parallelism.
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 BUILD_DIR [OUT_DIR]" >&2
  exit 2
fi
build=$1
out=${2:-$build/grid_bench}
src="$(cd "$(dirname "$0")/.." && pwd)"
model="$src/examples/digits/digits.onnx"
sample="$src/examples/digits/sample_0.npy"
mkdir -p "$out"
cmake --build "$build" --target gpugrid grid_bench -j "${JOBS:-1}" >/dev/null
bin=$build/gpugrid
gb=$build/bench/grid_bench

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. In-process figures.
"$gb" "$model" --jobs "${GRID_JOBS:-3000}" --concurrency 32 --json >"$out/grid_bench.json"
"$gb" "$model" --jobs "${GRID_JOBS:-3000}" --concurrency 32 | sed 's/^/  /' || true

# 1b. A persistent client reusing standing bids (no bidding round per job).
"$gb" "$model" --only overhead,throughput --standing --jobs "${GRID_JOBS:-3000}" --concurrency 32 --json >"$out/grid_bench_standing.json"
"$gb" "$model" --only overhead,throughput --standing --jobs "${GRID_JOBS:-3000}" --concurrency 32 | sed 's/^/  /' || true

# 2. Throughput against real provider processes.
tmp="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
"$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/p0" --slots 4 --json >"$tmp/p0.log" 2>/dev/null &
pids+=($!)
url=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$tmp/p0.log" | head -1)"
  [ -n "$url" ] && break
  sleep 0.05
done
for i in 1 2 3; do
  "$bin" offer --listen 127.0.0.1:0 --data-dir "$tmp/p$i" --slots 4 --peer "$url" >/dev/null 2>&1 &
  pids+=($!)
done
sleep 1
"$gb" "$model" --only throughput --jobs "${GRID_JOBS:-3000}" --concurrency 32 --peer "$url" --json >"$out/grid_bench_external.json"
"$gb" "$model" --only throughput --jobs "${GRID_JOBS:-3000}" --concurrency 32 --peer "$url" | sed 's/^/  /'
"$gb" "$model" --only throughput --standing --jobs "${GRID_JOBS:-3000}" --concurrency 32 --peer "$url" | sed 's/^/  /'
kill "${pids[@]}" 2>/dev/null || true

# 3. The whole command line, median of N runs each.
python3 - "$bin" "$model" "$sample" "$tmp" "$out/cli.json" <<'EOF'
import json, statistics, subprocess, sys, time
bin_, model, sample, tmp, out = sys.argv[1:]
def median_ms(args, n=30):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([bin_] + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={"XDG_DATA_HOME": tmp + "/data", "XDG_CONFIG_HOME": tmp + "/config", "HOME": tmp})
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
local = median_ms(["run", model, sample, "--local", "-o", tmp + "/l.npy"])
embedded = median_ms(["run", model, sample, "-o", tmp + "/e.npy"])
res = {"local_ms": local, "embedded_grid_ms": embedded, "difference_ms": embedded - local}
json.dump(res, open(out, "w"))
print(f"  whole command line: run --local median {local:.1f} ms, run on the embedded grid {embedded:.1f} ms "
      f"(difference {embedded - local:.1f} ms; target <= 50)")
EOF
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrote $out/grid_bench.json, $out/grid_bench_standing.json, $out/grid_bench_external.json, $out/cli.json"
