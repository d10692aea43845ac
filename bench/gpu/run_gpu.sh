#!/usr/bin/env bash
# Gathers every GPU figure in one run on a machine with an NVIDIA GPU: the backend-consistency
# tests, the ONNX node suite on CUDA (and on the CPU for comparison), model checks against
# PyTorch and the benchmarks. Expects the pack made by bench/gpu/pack.sh in .device/ and
# writes everything under $OUT (default gpu-out/).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
D=$PWD/.device
[ -d "$D/lib" ] || tar -C "$D" -xJf "$D/lib.tar.xz"
# shellcheck disable=SC1091
source "$D/env.sh"
GG=$D/bin/gpugrid
{ date -u; nvidia-smi; } > "$OUT/nvidia-smi.txt" 2>&1
"$GG" --version > "$OUT/version.txt" 2>&1
echo "== device discovery"
"$GG" inspect "$D/probe.onnx" --device cuda > "$OUT/inspect-cuda.txt" 2>&1
echo "== consistency tests"
timeout 300 "$D/bin/gpugrid_tests" "[consistency]" > "$OUT/consistency.txt" 2>&1
echo "exit $?" >> "$OUT/consistency.txt"
tail -5 "$OUT/consistency.txt"
echo "== node suite"
rm -rf /tmp/gg-suite && mkdir -p /tmp/gg-suite && tar -C /tmp/gg-suite -xJf "$D/node-suite.tar.xz"
suite=$(dirname "$(find /tmp/gg-suite -name model.onnx | head -1)")/..
timeout 400 "$GG" selftest --suite "$suite" --device cuda > "$OUT/selftest-cuda.txt" 2>&1
tail -1 "$OUT/selftest-cuda.txt"
timeout 200 "$GG" selftest --suite "$suite" --device cpu > "$OUT/selftest-cpu.txt" 2>&1
tail -1 "$OUT/selftest-cpu.txt"
echo "== models and benchmarks"
timeout "${BENCH_TIMEOUT:-330}" python3 bench/gpu/gpu_bench.py --gpugrid "$GG" --out "$OUT/bench" ${QUICK:+--quick} \
  > "$OUT/bench.log" 2>&1
echo "exit $?" >> "$OUT/bench.log"
tail -20 "$OUT/bench.log"
rm -rf "$OUT/bench/models"
