#!/usr/bin/env bash
# Serving benchmark: `gpugrid serve` (--local and the embedded grid) on the bundled digit
# classifier with 64 concurrent keep-alive clients. (The comparison with Ray Serve that the
# serving issue asks for is not here yet: ray[serve] is not in the test environment.)
# Usage: bench/serve_bench.sh path/to/gpugrid [SECONDS]   (prints one JSON line per setup)
set -euo pipefail
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
secs=${2:-10}
src="$(cd "$(dirname "$0")/.." && pwd)"
py=${GPUGRID_PYTHON:-$src/.venv/bin/python}
tmp="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/models"
cp "$src/examples/digits/digits.onnx" "$tmp/models/"
for mode in local grid; do
  extra=()
  [ "$mode" = local ] && extra=(--local)
  "$bin" serve --listen 127.0.0.1:0 --models "$tmp/models" --threads 1 --workers 2 --json "${extra[@]}" >"$tmp/s.log" 2>&1 &
  pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr="$(sed -n 's/.*"url":"http:\/\/\([^"]*\)".*/\1/p' "$tmp/s.log" | head -1)"
    [ -n "$addr" ] && break
    sleep 0.05
  done
  printf '{"server":"gpugrid serve %s",' "$mode"
  "$py" "$src/bench/serve_bench.py" "$addr" digits pixels 1,64 --seconds "$secs" | sed 's/^{//'
  kill -TERM $pid
  wait $pid || true
  pid=""
done
