#!/usr/bin/env bash
# Builds wire_bench in an existing build directory and runs it, writing its rows as JSON.
#
#   bench/wire_bench.sh BUILD_DIR [OUT.json] [-- wire_bench options...]
#
# BUILD_DIR is a configured CMake build tree (e.g. build/); OUT.json defaults to
# BUILD_DIR/wire_bench.json. Options after -- go to wire_bench (see bench/wire_bench.cc:
# --small N, --large N, --large-mib M, --no-micro, --modes signed,mac). JOBS sets the build's
# parallelism (default 1). The table is printed too; the machine and load average are printed
# before and after, because wall-clock rates on a shared machine move with everybody's load.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 BUILD_DIR [OUT.json] [-- wire_bench options...]" >&2
  exit 2
fi
build=$1
shift
out=$build/wire_bench.json
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  out=$1
  shift
fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  echo "wire_bench.sh: $build is not a configured build directory (run cmake first)" >&2
  exit 2
fi
cmake --build "$build" --target wire_bench -j "${JOBS:-1}" >/dev/null
bin=$build/bench/wire_bench
[ -x "$bin" ] || { echo "wire_bench.sh: $bin was not built" >&2; exit 1; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" "$@" --json >"$out"
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrote $out"
python3 - "$out" <<'EOF' 2>/dev/null || cat "$out"
import json, sys
for r in json.load(open(sys.argv[1])):
    print(f"{r['name']:<34} {r['value']:>12.1f} {r['unit']:<6} {r['note']}")
EOF
