#!/usr/bin/env python3
"""Writes a dense MLP as ONNX (fixed batch of 1, float32) and one .npy input for it, for the
scaling part of bench/batch_bench.sh: enough compute per job (a few MFLOP) that providers
limited to a share of a core, not the client, bound the rate.

Usage: bench/make_mlp.py OUT_DIR [WIDTH=1024] [LAYERS=3] [INPUTS=256]
Writes OUT_DIR/mlp.onnx and OUT_DIR/mlp_input.npy; prints the model's FLOPs per inference.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    out = sys.argv[1]
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    inputs = int(sys.argv[4]) if len(sys.argv) > 4 else 256
    rng = np.random.default_rng(7)
    os.makedirs(out, exist_ok=True)
    nodes, inits = [], []
    prev, prev_w, flops = "x", inputs, 0
    for i in range(layers + 1):
        w_out = 10 if i == layers else width
        w = (rng.standard_normal((prev_w, w_out)) / np.sqrt(prev_w)).astype(np.float32)
        b = (0.01 * rng.standard_normal(w_out)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        last = i == layers
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            prev = f"h{i}"
        flops += 2 * prev_w * w_out
        prev_w = w_out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="gpugrid-bench")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "mlp.onnx"))
    np.save(os.path.join(out, "mlp_input.npy"), rng.standard_normal((1, inputs)).astype(np.float32))
    print(f"{flops / 1e6:.1f} MFLOP per inference")


if __name__ == "__main__":
    main()
