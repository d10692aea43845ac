#!/usr/bin/env python3
"""Writes one-node models with bad inputs for the loss, NMS, Det, signal, text and optional
ops, and a model whose input is a sequence, for tests/node_ops_bad_input_test.sh.

    make_bad_models.py OUT_DIR

Each case is OUT_DIR/<name>/model.onnx with input_<i>.npy files; OUT_DIR/cases.txt lists
"name expected-message-fragment" per line. Seeded and deterministic. Needs numpy and onnx.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
cases = []
ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
        np.dtype(np.int32): TensorProto.INT32}


def write(name, op, feeds, n_out, expect, domain="", opset=17, **attrs):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    ins = [helper.make_tensor_value_info(k, ELEM[v.dtype], list(v.shape)) for k, v in feeds]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.UNDEFINED, None) for i in range(n_out)]
    node = helper.make_node(op, [k for k, _ in feeds], [f"y{i}" for i in range(n_out)], domain=domain or None, **attrs)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    m = helper.make_model(helper.make_graph([node], name, ins, outs), opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (_, v) in enumerate(feeds):
        np.save(os.path.join(d, f"input_{i}.npy"), v)
    cases.append((name, expect))


x = np.zeros((2, 3, 4), np.float32)
write("nll_target_out_of_range", "NegativeLogLikelihoodLoss",
      [("x", x), ("t", np.array([[0, 1, 2, 3], [0, 0, 0, 0]], np.int64))], 1, "outside [0, 3)")
write("nll_target_negative_not_ignored", "NegativeLogLikelihoodLoss",
      [("x", x), ("t", np.array([[0, 1, 2, -1], [0, 0, 0, 0]], np.int64))], 1, "is not ignore_index 5",
      ignore_index=5)
write("nll_target_shape", "NegativeLogLikelihoodLoss", [("x", x), ("t", np.zeros((2, 5), np.int64))], 1,
      "target has shape [2, 5], expected [2, 4]")
write("nll_rank1", "NegativeLogLikelihoodLoss", [("x", np.zeros(3, np.float32)), ("t", np.zeros(1, np.int64))], 1,
      "rank 2 or more")
write("nll_weight_shape", "NegativeLogLikelihoodLoss",
      [("x", x), ("t", np.zeros((2, 4), np.int64)), ("w", np.ones(4, np.float32))], 1, "weight has shape [4]")
write("sce_bad_reduction", "SoftmaxCrossEntropyLoss", [("x", x), ("t", np.zeros((2, 4), np.int64))], 1,
      "unknown reduction 'avg'", reduction="avg")
write("sce_float_target", "SoftmaxCrossEntropyLoss", [("x", x), ("t", np.zeros((2, 4), np.float32))], 1,
      "target must be int32 or int64")
write("nms_boxes_rank", "NonMaxSuppression", [("b", np.zeros((4, 4), np.float32)), ("s", np.zeros((1, 1, 4), np.float32))],
      1, "boxes must be [batch, spatial, 4]", opset=11)
write("nms_scores_mismatch", "NonMaxSuppression",
      [("b", np.zeros((1, 5, 4), np.float32)), ("s", np.zeros((1, 2, 4), np.float32))], 1, "scores must be", opset=11)
write("nms_iou_range", "NonMaxSuppression",
      [("b", np.zeros((1, 5, 4), np.float32)), ("s", np.zeros((1, 2, 5), np.float32)),
       ("m", np.array([3], np.int64)), ("iou", np.array([1.5], np.float32))], 1, "iou_threshold 1.5", opset=11)
write("det_not_square", "Det", [("x", np.zeros((2, 3, 4), np.float32))], 1, "square matrices", opset=11)
write("dft_last_axis", "DFT", [("x", np.zeros((1, 8, 1), np.float32))], 1, "axis 2 is out of range", axis=2)
write("dft_bad_last_dim", "DFT", [("x", np.zeros((1, 8, 3), np.float32))], 1, "1 or 2")
write("stft_frame_too_long", "STFT", [("x", np.zeros((1, 8, 1), np.float32)), ("step", np.array(2, np.int64)),
                                      ("w", np.ones(16, np.float32))], 1, "outside [1, signal length 8]")
write("window_negative_size", "HannWindow", [("n", np.array(-3, np.int64))], 1, "size -3")
write("tfidf_bad_counts", "TfIdfVectorizer", [("x", np.zeros((2, 5), np.int64))], 1, "ngram_counts", opset=9,
      mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=0, ngram_counts=[0, 3],
      ngram_indexes=[0, 1], pool_int64s=[1, 2])
write("adagrad_shape_mismatch", "Adagrad",
      [("r", np.array(0.1, np.float32)), ("t", np.array(0, np.int64)), ("x", np.zeros(3, np.float32)),
       ("g", np.zeros(4, np.float32)), ("h", np.zeros(3, np.float32))], 2, "group 0", domain="ai.onnx.preview.training")

# A sequence input: `run` says what such a model needs instead of failing on the file.
d = os.path.join(OUT, "sequence_input")
os.makedirs(d, exist_ok=True)
seq_t = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
g = helper.make_graph([helper.make_node("SequenceLength", ["s"], ["n"])], "seq",
                      [helper.make_value_info("s", seq_t)], [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, os.path.join(d, "model.onnx"))
np.save(os.path.join(d, "input_0.npy"), np.zeros(3, np.float32))
cases.append(("sequence_input", "has type sequence<float32>"))

with open(os.path.join(OUT, "cases.txt"), "w") as f:
    for name, expect in cases:
        f.write(f"{name}\t{expect}\n")
