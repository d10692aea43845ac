#!/usr/bin/env bash
# gpugrid serve against Ray Serve: the bundled digit classifier over loopback, 64 concurrent
# keep-alive clients posting Open Inference Protocol v2 JSON (bench/serve_bench.py), in
# alternating rounds in one run; prints one JSON line per round and setup, then the best of
# each setup. Setups: `gpugrid serve --local`, `gpugrid serve` on the embedded grid (bid,
# execute, verify, receipt per request; dynamic batching on its provider), and a Ray Serve
# deployment running the model with onnxruntime (bench/serve_ray_app.py; plain, and with
# @serve.batch). Ray stays up for the whole run (its start takes tens of seconds).
# Needs ray[serve] in $GPUGRID_BENCH_PYTHON (default .venv-bench/bin/python; see
# bench/requirements-bench.txt); the load generator runs on $GPUGRID_PYTHON (default .venv).
# Usage: bench/serve_ray_bench.sh path/to/gpugrid [SECONDS=8] [ROUNDS=3] [WORKERS=64]
set -uo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
secs=${2:-8}
rounds=${3:-3}
workers=${4:-64}
src="$(cd "$(dirname "$0")/.." && pwd)"
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
raypy=${GPUGRID_BENCH_PYTHON:-$src/.venv-bench/bin/python}
if ! "$raypy" -c 'import ray.serve, onnxruntime' 2>/dev/null; then
  echo "serve_ray_bench: ray[serve] and onnxruntime are not importable by $raypy (see bench/requirements-bench.txt)" >&2
  exit 77
fi
tmp="$(mktemp -d)"
pids=()
ray_pgid=""
# Ray's own processes (raylet, GCS, workers, agents) share the app's process group.
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; [ -n "$ray_pgid" ] && kill -9 -- "-$ray_pgid" 2>/dev/null; rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" HOME="$tmp/home" RAY_USAGE_STATS_ENABLED=0
unset GPUGRID_PEERS
mkdir -p "$tmp/models" "$tmp/home"
cp "$src/examples/digits/digits.onnx" "$tmp/models/"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_ray() {  # sets ray_port
  ray_port=$(free_port)
  setsid "$raypy" "$src/bench/serve_ray_app.py" "$tmp/models/digits.onnx" digits "$ray_port" --batch 16 >"$tmp/ray.log" 2>&1 &
  ray_pgid=$!
  pids+=("$!")
  for _ in $(seq 1 600); do grep -q '^ready' "$tmp/ray.log" && return 0; sleep 0.5; done
  echo "serve_ray_bench: Ray Serve did not start; its log:" >&2
  tail -20 "$tmp/ray.log" >&2
  exit 1
}

gg_round() {  # gg_round LABEL FLAGS...
  local label=$1
  shift
  local log="$tmp/serve_${round}_$RANDOM.log"
  "$bin" serve --listen 127.0.0.1:0 --models "$tmp/models" --workers "$workers" --json "$@" >"$log" 2>&1 &
  local pid=$!
  local addr=""
  for _ in $(seq 1 200); do
    addr="$(sed -n 's/.*"url":"http:\/\/\([^"]*\)".*/\1/p' "$log" | head -1)"
    [ -n "$addr" ] && break
    sleep 0.05
  done
  printf '{"round":%d,"server":"%s",' "$round" "$label"
  "$py" "$src/bench/serve_bench.py" "$addr" digits pixels 1,64 --seconds "$secs" 2>"$tmp/err.txt" | sed 's/^{//'
  [ -s "$tmp/err.txt" ] && echo "\"failed\":true}" && tail -1 "$tmp/err.txt" >&2
  kill -TERM $pid
  wait $pid 2>/dev/null
}

ray_round() {  # ray_round LABEL APP
  printf '{"round":%d,"server":"%s",' "$round" "$1"
  "$py" "$src/bench/serve_bench.py" "127.0.0.1:$ray_port" digits pixels 1,64 --seconds "$secs" \
    --path "/$2/v2/models/digits/infer" | sed 's/^{//'
}

start_ray
for round in $(seq 1 "$rounds"); do
  gg_round "gpugrid serve --local" --local
  ray_round "ray serve (onnxruntime)" plain
  gg_round "gpugrid serve (embedded grid)"
  ray_round "ray serve (onnxruntime, @serve.batch 16)" batched
done | tee "$tmp/all.jsonl"
echo "best of $rounds rounds (highest req/s; its latencies):"
"$py" - "$tmp/all.jsonl" <<'PY'
import json, sys
best = {}
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue  # a round whose load generator failed
    if r["server"] not in best or r["req_per_s"] > best[r["server"]]["req_per_s"]:
        best[r["server"]] = r
for s, r in best.items():
    print(json.dumps({"server": s, "req_per_s": r["req_per_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                      "errors": r["errors"]}))
PY
