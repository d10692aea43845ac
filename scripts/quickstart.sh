#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds gpugrid, runs the bundled digit classifier on the
# embedded local grid (an in-process provider reached through the real grid path), then has the
# bundled chat model (examples/chat) answer a prompt and says how to chat with it.
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
echo
echo 'gpugrid generate examples/chat --prompt "Give me a verse about light."'
build/gpugrid generate examples/chat --prompt "Give me a verse about light."
echo
echo "Chat with the bundled model (a 1.3M-parameter toy trained on the King James Bible, see"
echo "examples/chat/README.md; /reset, /system TEXT, /stats, /exit; Ctrl-C stops an answer):"
echo "  build/gpugrid chat examples/chat"
