#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds gpugrid and runs the bundled digit classifier on
# the embedded local grid (an in-process provider reached through the real grid path).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target gpugrid
echo
echo "gpugrid run examples/digits/digits.onnx examples/digits/sample_0.npy"
if [ -t 1 ]; then
  build/gpugrid run examples/digits/digits.onnx examples/digits/sample_0.npy
else
  build/gpugrid run examples/digits/digits.onnx examples/digits/sample_0.npy --json
fi
