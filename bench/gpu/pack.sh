#!/usr/bin/env bash
# Packs what bench/gpu/run_gpu.sh needs into .device/: the programs with their libraries
# (made by a bundler script given as $1, which copies each program and the shared libraries
# it needs into DIR/bin and DIR/lib and writes DIR/env.sh), a compressed copy of the ONNX node
# suite ($2, a folder of test_* cases) and a small probe model.
#   bench/gpu/pack.sh BUNDLER SUITE_DIR [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
bundler=$1
suite=$2
build=${3:-build}
rm -rf .device
bash "$bundler" .device "$build/gpugrid" "$build/tests/gpugrid_tests" "$build/libgpugrid_cuda.so"
strip --strip-unneeded .device/bin/* 2>/dev/null || true
# The libraries compress well (OpenBLAS alone is tens of MB): run_gpu.sh unpacks them.
tar -C .device -cJf .device/lib.tar.xz lib && rm -rf .device/lib
tar -C "$(dirname "$suite")" -cJf .device/node-suite.tar.xz "$(basename "$suite")"
"${PYTHON:-python3}" - <<'PY'
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), ".device/probe.onnx")
PY
du -sh .device
