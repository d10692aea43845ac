#!/usr/bin/env python3
"""Builds one-node ONNX models for the recurrent ops (LSTM, GRU, RNN), the com.microsoft
operators that exported transformers and LLM decoders carry, and ONNX ops whose backend node
cases are thin (losses with weights, NonMaxSuppression, Det, Shrink), with reference outputs
from onnxruntime.

    make_op_cases.py OUT_DIR [--cases a,b,...] [--list]

Writes OUT_DIR/<case>/model.onnx, input_<i>.npy, output_<j>.npy and OUT_DIR/manifest.json in
the format of make_families.py (one "family" per case), so tests/models/compare.py and
tests/op_cases_test.sh read it the same way. Weights are initializers; the inputs a model
declares are fed from the .npy files in order. Seeded, so the files are the same on every run.
Needs numpy, onnx and onnxruntime (no torch).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 13
OPSET = 17
MS = "com.microsoft"
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def rnd(rng, *shape, scale=1.0, dtype=np.float32):
    return (rng.standard_normal(shape) * scale).astype(dtype)


class spec:
    """One single-node model: inputs (name, array, constant?), outputs (name, dtype), node."""

    def __init__(self, op, inputs, outputs, domain="", rtol=1e-3, atol=1e-4, **attrs):
        self.op, self.inputs, self.outputs, self.domain, self.attrs = op, inputs, outputs, domain, attrs
        self.rtol, self.atol = rtol, atol
        # Attributes changed for the reference run only (e.g. a MatMulNBits accuracy_level that
        # onnxruntime and gpugrid take different paths for).
        self.ref_attrs = {}
        self.model = None  # a whole model instead of one node (inputs then list only the feeds)


ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
        np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int64): TensorProto.INT64,
        np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def build(s):
    if s.model is not None:
        return s.model
    node_inputs, graph_inputs, inits = [], [], []
    for name, arr, const in s.inputs:
        if arr is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        if const:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, ELEM[arr.dtype], list(arr.shape)))
    node_outputs = [o[0] for o in s.outputs]
    graph_outputs = [helper.make_tensor_value_info(n, t, None) for n, t in s.outputs if n]
    node = helper.make_node(s.op, node_inputs, node_outputs, domain=s.domain or None, **s.attrs)
    g = helper.make_graph([node], "op_case", graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if s.domain:
        opsets.append(helper.make_opsetid(s.domain, 1))
    m = helper.make_model(g, opset_imports=opsets, producer_name="make_op_cases")
    m.ir_version = 8
    return m


# ---------------------------------------------------------------------------------------
# Recurrent nets. W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H], P [D, 3*H].

def rnn_case(rng, op, gates, *, S=5, N=3, I=4, H=6, direction="forward", layout=0, bias=True, lens=None,
             init_h=False, init_c=False, peep=False, want=(1, 1, 1), **attrs):
    D = 2 if direction == "bidirectional" else 1
    X = rnd(rng, *((N, S, I) if layout else (S, N, I)))
    ins = [("X", X, False), ("W", rnd(rng, D, gates * H, I, scale=0.5), True),
           ("R", rnd(rng, D, gates * H, H, scale=0.5), True),
           ("B", rnd(rng, D, 2 * gates * H, scale=0.3) if bias else None, True),
           ("sequence_lens", np.array(lens, np.int32) if lens is not None else None, False)]
    state = (N, D, H) if layout else (D, N, H)
    ins.append(("initial_h", rnd(rng, *state) if init_h else None, False))
    if op == "LSTM":
        ins.append(("initial_c", rnd(rng, *state) if init_c else None, False))
        ins.append(("P", rnd(rng, D, 3 * H, scale=0.5) if peep else None, True))
    while ins and ins[-1][1] is None:
        ins.pop()
    names = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    outs = [(n if w else "", TensorProto.FLOAT) for n, w in zip(names, want)]
    while outs and not outs[-1][0]:
        outs.pop()
    return spec(op, ins, outs, hidden_size=H, direction=direction, layout=layout, **attrs)


@case
def lstm_forward(rng):
    return rnn_case(rng, "LSTM", 4)


@case
def lstm_bidirectional_peepholes(rng):
    return rnn_case(rng, "LSTM", 4, direction="bidirectional", lens=[5, 3, 1], init_h=True, init_c=True,
                    peep=True, clip=1.5)


@case
def lstm_reverse_layout1(rng):
    return rnn_case(rng, "LSTM", 4, direction="reverse", layout=1, lens=[2, 5, 4], init_h=True, init_c=True,
                    input_forget=1, want=(1, 0, 1))


@case
def lstm_activations(rng):
    return rnn_case(rng, "LSTM", 4, direction="bidirectional", bias=False, peep=True,
                    activations=["HardSigmoid", "LeakyRelu", "ScaledTanh", "Sigmoid", "Elu", "Softsign"],
                    activation_alpha=[0.3, 0.05, 0.9, 1.2], activation_beta=[0.4, 1.1])


@case
def gru_forward(rng):
    return rnn_case(rng, "GRU", 3)


@case
def gru_linear_before_reset(rng):
    return rnn_case(rng, "GRU", 3, direction="bidirectional", lens=[4, 5, 2], init_h=True,
                    linear_before_reset=1, clip=2.0)


@case
def gru_reverse_layout1(rng):
    return rnn_case(rng, "GRU", 3, direction="reverse", layout=1, init_h=True, lens=[5, 1, 3])


@case
def gru_activations(rng):
    return rnn_case(rng, "GRU", 3, activations=["Affine", "ThresholdedRelu"], activation_alpha=[0.5, 0.1],
                    activation_beta=[0.2], want=(0, 1))


@case
def rnn_forward(rng):
    return rnn_case(rng, "RNN", 1, S=7, N=2, I=5, H=8)


@case
def rnn_bidirectional(rng):
    return rnn_case(rng, "RNN", 1, direction="bidirectional", lens=[5, 2, 4], init_h=True,
                    activations=["Relu", "Softplus"], clip=3.0)


@case
def rnn_batch_large(rng):
    # A batch wide enough for the packed recurrent product.
    return rnn_case(rng, "RNN", 1, S=6, N=9, I=12, H=16, direction="reverse", init_h=True)


@case
def lstm_batch_large(rng):
    return rnn_case(rng, "LSTM", 4, S=6, N=8, I=10, H=12, direction="bidirectional", init_h=True, init_c=True,
                    peep=True, lens=[6, 5, 6, 1, 2, 6, 3, 4])


@case
def gru_batch_large(rng):
    return rnn_case(rng, "GRU", 3, S=4, N=7, I=9, H=11, init_h=True, lens=[4, 3, 2, 1, 4, 4, 2])


# ---------------------------------------------------------------------------------------
# com.microsoft normalisation and GELU family.

@case
def simplified_layernorm(rng):
    return spec("SimplifiedLayerNormalization", [("X", rnd(rng, 2, 5, 16), False), ("scale", rnd(rng, 16), True)],
                [("Y", TensorProto.FLOAT)], axis=-1, epsilon=1e-6)


@case
def skip_simplified_layernorm(rng):
    return spec("SkipSimplifiedLayerNormalization",
                [("input", rnd(rng, 2, 4, 32), False), ("skip", rnd(rng, 2, 4, 32), False),
                 ("gamma", rnd(rng, 32), True)],
                [("output", TensorProto.FLOAT), ("", 0), ("", 0), ("input_skip_bias_sum", TensorProto.FLOAT)],
                domain=MS, epsilon=1e-6)


@case
def skip_layernorm_bias(rng):
    return spec("SkipLayerNormalization",
                [("input", rnd(rng, 3, 2, 24), False), ("skip", rnd(rng, 3, 2, 24), False),
                 ("gamma", rnd(rng, 24), True), ("beta", rnd(rng, 24), True), ("bias", rnd(rng, 24), True)],
                [("output", TensorProto.FLOAT)], domain=MS, epsilon=1e-5)


@case
def fast_gelu(rng):
    return spec("FastGelu", [("X", rnd(rng, 2, 3, 40, scale=2), False), ("bias", rnd(rng, 40), True)],
                [("Y", TensorProto.FLOAT)], domain=MS)


@case
def bias_gelu(rng):
    return spec("BiasGelu", [("A", rnd(rng, 4, 33, scale=2), False), ("B", rnd(rng, 33), True)],
                [("C", TensorProto.FLOAT)], domain=MS)


@case
def quick_gelu(rng):
    return spec("QuickGelu", [("X", rnd(rng, 5, 17, scale=3), False)], [("Y", TensorProto.FLOAT)], domain=MS,
                alpha=1.5)


@case
def ms_gelu(rng):
    return spec("Gelu", [("X", rnd(rng, 3, 50, scale=3), False)], [("Y", TensorProto.FLOAT)], domain=MS)


# ---------------------------------------------------------------------------------------
# com.microsoft matrix products.

def quantize_nbits(rng, N, K, block, bits=4, zp=True):
    """Random weights quantized as the model builder stores them: B [N, blocks, blob], scales,
    packed uint8 zero points."""
    kb = (K + block - 1) // block
    q = rng.integers(0, 2 ** bits, size=(N, kb * block)).astype(np.uint8)
    per = 8 // bits
    packed = np.zeros((N, kb * block // per), np.uint8)
    for i in range(per):
        packed |= (q[:, i::per] << (bits * i)).astype(np.uint8)
    B = packed.reshape(N, kb, block * bits // 8)
    scales = (rng.random((N * kb,)) * 0.05 + 0.01).astype(np.float32)
    if not zp:
        return B, scales, None
    zq = rng.integers(0, 2 ** bits, size=(N, kb)).astype(np.uint8)
    zrow = (kb * bits + 7) // 8
    zp_packed = np.zeros((N, zrow), np.uint8)
    for b in range(kb):
        zp_packed[:, (b * bits) // 8] |= (zq[:, b] << ((b * bits) % 8)).astype(np.uint8)
    return B, scales, zp_packed.reshape(-1)


@case
def matmul_nbits_decode(rng):
    N, K, block = 48, 96, 32
    B, sc, zp = quantize_nbits(rng, N, K, block)
    s = spec("MatMulNBits", [("A", rnd(rng, 1, 1, K), False), ("B", B, True), ("scales", sc, True),
                             ("zero_points", zp, True)], [("Y", TensorProto.FLOAT)], domain=MS,
             K=K, N=N, bits=4, block_size=block, accuracy_level=4)
    s.rtol, s.atol = 1e-3, 1e-3
    return s


# accuracy_level 4 with few rows: A quantized to int8 per block, integer dot products (as
# onnxruntime's MLAS on AVX2); the reference is onnxruntime at the same level.
@case
def matmul_nbits_q8_symmetric(rng):
    N, K, block = 70, 256, 32  # N: groups of 4 columns and a ragged end
    B, sc, _ = quantize_nbits(rng, N, K, block, zp=False)
    return spec("MatMulNBits", [("A", rnd(rng, 1, 1, K), False), ("B", B, True), ("scales", sc, True)],
                [("Y", TensorProto.FLOAT)], domain=MS, K=K, N=N, bits=4, block_size=block, accuracy_level=4,
                rtol=1e-3, atol=1e-3)


@case
def matmul_nbits_q8_block64_rows3(rng):
    N, K, block = 40, 192, 64
    B, sc, zp = quantize_nbits(rng, N, K, block)
    return spec("MatMulNBits", [("A", rnd(rng, 3, K), False), ("B", B, True), ("scales", sc, True),
                                ("zero_points", zp, True), ("", None, True), ("bias", rnd(rng, N), True)],
                [("Y", TensorProto.FLOAT)], domain=MS, K=K, N=N, bits=4, block_size=block, accuracy_level=4,
                rtol=1e-3, atol=1e-3)


@case
def matmul_nbits_q8_block128_decode(rng):
    # One row, blocks of 128 (two 64-value chunk pairs each), zero points.
    N, K, block = 36, 384, 128
    B, sc, zp = quantize_nbits(rng, N, K, block)
    return spec("MatMulNBits", [("A", rnd(rng, 1, 1, K), False), ("B", B, True), ("scales", sc, True),
                                ("zero_points", zp, True)], [("Y", TensorProto.FLOAT)], domain=MS,
                K=K, N=N, bits=4, block_size=block, accuracy_level=4, rtol=1e-3, atol=1e-3)


@case
def matmul_nbits_q8_ragged(rng):
    N, K, block = 24, 80, 32
    B, sc, zp = quantize_nbits(rng, N, K, block)
    return spec("MatMulNBits", [("A", rnd(rng, 2, K), False), ("B", B, True), ("scales", sc, True),
                                ("zero_points", zp, True)], [("Y", TensorProto.FLOAT)], domain=MS,
                K=K, N=N, bits=4, block_size=block, accuracy_level=4, rtol=1e-3, atol=1e-3)


@case
def matmul_nbits_prompt(rng):
    N, K, block = 80, 128, 16
    B, sc, _ = quantize_nbits(rng, N, K, block, zp=False)
    return spec("MatMulNBits", [("A", rnd(rng, 2, 7, K), False), ("B", B, True), ("scales", sc, True),
                                ("", None, True), ("", None, True), ("bias", rnd(rng, N), True)],
                [("Y", TensorProto.FLOAT)], domain=MS, K=K, N=N, bits=4, block_size=block)


@case
def matmul_nbits_ragged_k(rng):
    # K = 72 is not a whole number of 32-wide blocks: the last block is zero-padded.
    N, K, block = 24, 72, 32
    B, sc, zp = quantize_nbits(rng, N, K, block)
    return spec("MatMulNBits", [("A", rnd(rng, 5, K), False), ("B", B, True), ("scales", sc, True),
                                ("zero_points", zp, True)], [("Y", TensorProto.FLOAT)], domain=MS,
                K=K, N=N, bits=4, block_size=block)


@case
def matmul_nbits_ragged_decode(rng):
    # Two rows (the per-block path) with K = 80: two whole 32-wide blocks and a padded one.
    N, K, block = 40, 80, 32
    B, sc, zp = quantize_nbits(rng, N, K, block)
    return spec("MatMulNBits", [("A", rnd(rng, 2, K), False), ("B", B, True), ("scales", sc, True),
                                ("zero_points", zp, True), ("", None, True), ("bias", rnd(rng, N), True)],
                [("Y", TensorProto.FLOAT)], domain=MS, K=K, N=N, bits=4, block_size=block)


@case
def matmul_nbits_act_order(rng):
    # g_idx: each k's quantization block, here a shuffled assignment (GPTQ act-order). Without
    # zero points: onnxruntime 1.23's CPU kernel uses 8 for every block when g_idx is given,
    # whatever zero_points holds.
    N, K, block = 16, 64, 32
    B, sc, _ = quantize_nbits(rng, N, K, block, zp=False)
    g = rng.permutation(np.arange(K) // block).astype(np.int32)
    return spec("MatMulNBits", [("A", rnd(rng, 3, K), False), ("B", B, True), ("scales", sc, True),
                                ("", None, True), ("g_idx", g, True)], [("Y", TensorProto.FLOAT)], domain=MS,
                K=K, N=N, bits=4, block_size=block)


@case
def matmul_nbits_8bit(rng):
    N, K, block = 20, 64, 32
    B, sc, zp = quantize_nbits(rng, N, K, block, bits=8)
    return spec("MatMulNBits", [("A", rnd(rng, 3, K), False), ("B", B, True), ("scales", sc, True),
                                ("zero_points", zp, True)], [("Y", TensorProto.FLOAT)], domain=MS,
                K=K, N=N, bits=8, block_size=block)


@case
def gather_block_quantized(rng):
    V, K, block = 10, 64, 32
    B, sc, zp = quantize_nbits(rng, V, K, block)
    return spec("GatherBlockQuantized", [("data", B.reshape(V, -1), True), ("indices", np.array([[3, 0, 9], [-1, 4, 4]], np.int64), False),
                                         ("scales", sc.reshape(V, -1), True), ("zero_points", zp.reshape(V, -1), True)],
                [("Y", TensorProto.FLOAT)], domain=MS, block_size=block, gather_axis=0, quantize_axis=1, bits=4)


@case
def fused_matmul(rng):
    return spec("FusedMatMul", [("A", rnd(rng, 2, 1, 6, 5), False), ("B", rnd(rng, 3, 7, 6), False)],
                [("Y", TensorProto.FLOAT)], domain=MS, alpha=0.5, transA=1, transB=1)


@case
def dynamic_quantize_matmul(rng):
    # B within [-63, 63]: onnxruntime's AVX2 u8 x s8 kernel adds pairs of products in int16 and
    # saturates beyond that.
    return spec("DynamicQuantizeMatMul", [("A", rnd(rng, 3, 4, 16), False),
                                          ("B", rng.integers(-63, 64, size=(16, 12)).astype(np.int8), True),
                                          ("b_scale", (rng.random(12) * 0.02 + 0.01).astype(np.float32), True),
                                          ("b_zero_point", None, True), ("bias", rnd(rng, 12), True)],
                [("Y", TensorProto.FLOAT)], domain=MS, rtol=2e-3, atol=2e-3)



@case
def nll_loss_weights_ignore_nd(rng):
    # [N, C, d1, d2] log-probabilities, targets with some at ignore_index, per-class weights.
    x = rnd(rng, 3, 5, 4, 2)
    t = rng.integers(0, 5, size=(3, 4, 2)).astype(np.int64)
    t[0, 1, 0] = t[2, 3, 1] = -1
    return spec("NegativeLogLikelihoodLoss", [("input", x, False), ("target", t, False),
                                              ("weight", (rng.random(5) + 0.5).astype(np.float32), True)],
                [("loss", TensorProto.FLOAT)], reduction="mean", ignore_index=-1)


@case
def nll_loss_none_int32(rng):
    return spec("NegativeLogLikelihoodLoss", [("input", rnd(rng, 6, 7), False),
                                              ("target", rng.integers(0, 7, size=(6,)).astype(np.int32), False)],
                [("loss", TensorProto.FLOAT)], reduction="none")


@case
def sce_loss_weights_log_prob(rng):
    t = rng.integers(0, 4, size=(2, 3, 5)).astype(np.int64)
    t[1, 2, 4] = 3
    return spec("SoftmaxCrossEntropyLoss", [("scores", rnd(rng, 2, 4, 3, 5, scale=3.0), False), ("labels", t, False),
                                            ("weights", (rng.random(4) + 0.25).astype(np.float32), True)],
                [("loss", TensorProto.FLOAT), ("log_prob", TensorProto.FLOAT)], reduction="sum", ignore_index=3)


def nms_boxes(rng, B, S, center):
    c = rng.random((B, S, 2)).astype(np.float32) * 10
    wh = (rng.random((B, S, 2)) * 3 + 0.5).astype(np.float32)
    if center:
        return np.concatenate([c, wh], axis=2)
    # Corners in either order (flipped for half the boxes).
    a, b = c - wh / 2, c + wh / 2
    flip = rng.random((B, S, 1)) < 0.5
    return np.concatenate([np.where(flip, b, a), np.where(flip, a, b)], axis=2).astype(np.float32)


@case
def nms_corners_many(rng):
    B, C, S = 2, 3, 40
    scores = rng.random((B, C, S)).astype(np.float32)
    return spec("NonMaxSuppression", [("boxes", nms_boxes(rng, B, S, False), False), ("scores", scores, False),
                                      ("max_output_boxes_per_class", np.array([15], np.int64), True),
                                      ("iou_threshold", np.array([0.3], np.float32), True),
                                      ("score_threshold", np.array([0.2], np.float32), True)],
                [("selected", TensorProto.INT64)])


@case
def nms_center_no_score_threshold(rng):
    B, C, S = 1, 2, 30
    scores = rng.random((B, C, S)).astype(np.float32)
    return spec("NonMaxSuppression", [("boxes", nms_boxes(rng, B, S, True), False), ("scores", scores, False),
                                      ("max_output_boxes_per_class", np.array([100], np.int64), True),
                                      ("iou_threshold", np.array([0.1], np.float32), True)],
                [("selected", TensorProto.INT64)], center_point_box=1)


@case
def det_batched(rng):
    return spec("Det", [("X", rnd(rng, 2, 3, 5, 5), False)], [("Y", TensorProto.FLOAT)], rtol=1e-3, atol=1e-3)


@case
def shrink_soft(rng):
    return spec("Shrink", [("x", rnd(rng, 4, 9, scale=2.0), False)], [("y", TensorProto.FLOAT)], bias=0.75, lambd=1.25)

@case
def matmul_integer_to_float(rng):
    return spec("MatMulIntegerToFloat", [("A", rng.integers(0, 255, size=(2, 5, 16)).astype(np.uint8), False),
                                         ("B", rng.integers(0, 255, size=(16, 8)).astype(np.uint8), True),
                                         ("a_scale", np.array(0.02, np.float32), True),
                                         ("b_scale", (rng.random(8) * 0.02 + 0.01).astype(np.float32), True),
                                         ("a_zero_point", np.array(128, np.uint8), True),
                                         ("b_zero_point", rng.integers(100, 150, size=8).astype(np.uint8), True),
                                         ("bias", rnd(rng, 8), True)],
                [("Y", TensorProto.FLOAT)], domain=MS)


# ---------------------------------------------------------------------------------------
# com.microsoft attention.

def rope_caches(max_pos, rot):
    inv = 1.0 / (10000 ** (np.arange(0, rot, 2, dtype=np.float64) / rot))
    ang = np.arange(max_pos)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


@case
def rotary_embedding(rng):
    cos, sin = rope_caches(32, 16)
    pos = np.array([[0, 1, 2, 3], [5, 6, 7, 8]], np.int64)
    return spec("RotaryEmbedding", [("input", rnd(rng, 2, 4, 3 * 16), False), ("position_ids", pos, False),
                                    ("cos_cache", cos, True), ("sin_cache", sin, True)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=3)


@case
def rotary_embedding_start_position(rng):
    # position_ids as one start position for every sequence.
    cos, sin = rope_caches(32, 16)
    return spec("RotaryEmbedding", [("input", rnd(rng, 2, 3, 2 * 16), False), ("position_ids", np.array([5], np.int64), False),
                                    ("cos_cache", cos, True), ("sin_cache", sin, True)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=2)


@case
def rotary_embedding_interleaved_partial(rng):
    cos, sin = rope_caches(16, 8)
    return spec("RotaryEmbedding", [("input", rnd(rng, 1, 2, 5, 16), False), ("position_ids", np.array([[3, 4, 5, 6, 7]], np.int64), False),
                                    ("cos_cache", cos, True), ("sin_cache", sin, True)],
                [("output", TensorProto.FLOAT)], domain=MS, interleaved=1, rotary_embedding_dim=8, num_heads=2)


def gqa_case(rng, *, B=2, S=4, P=0, N=4, Nkv=2, H=16, rotary=False, packed=False, lens=None, pos=None, **attrs):
    total = P + S
    q = rnd(rng, B, S, (N + 2 * Nkv) * H if packed else N * H)
    ins = [("query", q, False),
           ("key", None if packed else rnd(rng, B, S, Nkv * H), False),
           ("value", None if packed else rnd(rng, B, S, Nkv * H), False),
           ("past_key", rnd(rng, B, Nkv, P, H), False), ("past_value", rnd(rng, B, Nkv, P, H), False),
           ("seqlens_k", np.array(lens if lens is not None else [total - 1] * B, np.int32), False),
           ("total_sequence_length", np.array(total, np.int32), False)]
    if rotary:
        cos, sin = rope_caches(max(64, total), H)
        ins += [("cos_cache", cos, True), ("sin_cache", sin, True)]
    later = pos is not None or "bias" in attrs or "sink" in attrs
    if not rotary and later:
        ins += [("cos_cache", None, True), ("sin_cache", None, True)]
    if later:
        ins += [("position_ids", np.array(pos, np.int64) if pos is not None else None, False)]
    if "bias" in attrs or "sink" in attrs:
        ins += [("attention_bias", attrs.pop("bias", None), False)]
    if "sink" in attrs:
        ins += [("head_sink", attrs.pop("sink"), True)]
    outs = [("output", TensorProto.FLOAT), ("present_key", TensorProto.FLOAT), ("present_value", TensorProto.FLOAT)]
    return spec("GroupQueryAttention", ins, outs, domain=MS, num_heads=N, kv_num_heads=Nkv,
                do_rotary=int(rotary), **attrs)


@case
def gqa_prompt(rng):
    return gqa_case(rng, S=5, P=0)


@case
def gqa_decode_uneven_past(rng):
    # Decoding one token for two sequences whose caches hold 6 and 3 valid positions.
    return gqa_case(rng, B=2, S=1, P=6, lens=[6, 3], rotary=True)


@case
def gqa_decode_share_buffer(rng):
    # onnxruntime-genai's share-buffer layout: the past buffer holds the whole context (10
    # positions), of which the first 5 are valid; total_sequence_length is 6.
    s = gqa_case(rng, B=1, S=1, P=10, lens=[5], rotary=True)
    s.inputs = [(n, np.array(6, np.int32) if n == "total_sequence_length" else a, c) for n, a, c in s.inputs]
    return s


@case
def gqa_decode_position_ids(rng):
    # Rotary positions given explicitly (here not the cache positions).
    return gqa_case(rng, B=2, S=1, P=4, rotary=True, pos=[[9], [4]])


@case
def gqa_attention_bias(rng):
    return gqa_case(rng, B=1, S=3, P=2, bias=rnd(rng, 1, 4, 3, 5))


@case
def gqa_smooth_softmax(rng):
    return gqa_case(rng, B=2, S=1, P=3, smooth_softmax=1)


@case
def gqa_head_sink(rng):
    return gqa_case(rng, B=2, S=1, P=3, sink=rnd(rng, 4))


@case
def gqa_decode_rotary(rng):
    return gqa_case(rng, S=1, P=6, rotary=True)


@case
def gqa_prompt_rotary_packed(rng):
    return gqa_case(rng, B=1, S=6, P=0, N=6, Nkv=2, rotary=True, packed=True, rotary_interleaved=1)


@case
def gqa_local_window_softcap(rng):
    return gqa_case(rng, B=1, S=3, P=5, local_window_size=3, softcap=2.0, scale=0.3)


@case
def multi_head_attention(rng):
    B, S, L, N, H = 2, 3, 5, 2, 4
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    return spec("MultiHeadAttention", [("query", rnd(rng, B, S, N * H), False), ("key", rnd(rng, B, L, N * H), False),
                                       ("value", rnd(rng, B, L, N * 6), False), ("bias", rnd(rng, 2 * N * H + N * 6), True),
                                       ("key_padding_mask", mask, False)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)


@case
def multi_head_attention_cross_bnsh(rng):
    # Cross-attention with the encoder's keys and values already split into heads.
    B, S, L, N, H = 2, 3, 5, 2, 4
    return spec("MultiHeadAttention", [("query", rnd(rng, B, S, N * H), False), ("key", rnd(rng, B, N, L, H), False),
                                       ("value", rnd(rng, B, N, L, H), False)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)


def unpacked_reference(s, unpacked):
    """onnxruntime's CPU kernel has no packed layouts: the reference is the same attention
    with separate inputs."""
    def ref(tmp_path):
        onnx.save(build(unpacked), tmp_path)
        try:
            return run_reference(unpacked, tmp_path)
        finally:
            os.remove(tmp_path)
    s.ref_fn = ref
    return s


@case
def multi_head_attention_packed_qkv(rng):
    B, S, N, H = 2, 4, 2, 8
    qkv = rnd(rng, B, S, N, 3, H)
    s = spec("MultiHeadAttention", [("query", qkv, False)], [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)
    parts = [qkv[:, :, :, i, :].reshape(B, S, N * H).copy() for i in range(3)]
    u = spec("MultiHeadAttention", [("query", parts[0], False), ("key", parts[1], False), ("value", parts[2], False)],
             [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)
    return unpacked_reference(s, u)


@case
def multi_head_attention_packed_kv(rng):
    B, S, L, N, H = 2, 3, 5, 2, 8
    q, kv = rnd(rng, B, S, N * H), rnd(rng, B, L, N, 2, H)
    s = spec("MultiHeadAttention", [("query", q, False), ("key", kv, False)], [("output", TensorProto.FLOAT)],
             domain=MS, num_heads=N)
    u = spec("MultiHeadAttention", [("query", q, False), ("key", kv[:, :, :, 0].reshape(B, L, N * H).copy(), False),
                                    ("value", kv[:, :, :, 1].reshape(B, L, N * H).copy(), False)],
             [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)
    return unpacked_reference(s, u)


@case
def multi_head_attention_past(rng):
    B, S, P, N, H = 1, 2, 3, 2, 4
    return spec("MultiHeadAttention", [("query", rnd(rng, B, S, N * H), False), ("key", rnd(rng, B, S, N * H), False),
                                       ("value", rnd(rng, B, S, N * H), False), ("bias", None, True),
                                       ("key_padding_mask", None, False),
                                       ("attention_bias", rnd(rng, 1, N, S, P + S), False),
                                       ("past_key", rnd(rng, B, N, P, H), False), ("past_value", rnd(rng, B, N, P, H), False)],
                [("output", TensorProto.FLOAT), ("present_key", TensorProto.FLOAT), ("present_value", TensorProto.FLOAT)],
                domain=MS, num_heads=N, unidirectional=1, scale=0.4)


@case
def attention(rng):
    B, S, Din, N, H = 2, 4, 10, 2, 3
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
    return spec("Attention", [("input", rnd(rng, B, S, Din), False), ("weights", rnd(rng, Din, 3 * N * H, scale=0.5), True),
                              ("bias", rnd(rng, 3 * N * H), True), ("mask_index", mask, False)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)


@case
def attention_mask_lengths(rng):
    # mask_index as one valid length per sequence.
    B, S, Din, N, H = 2, 4, 6, 2, 3
    return spec("Attention", [("input", rnd(rng, B, S, Din), False), ("weights", rnd(rng, Din, 3 * N * H, scale=0.5), True),
                              ("bias", rnd(rng, 3 * N * H), True), ("mask_index", np.array([3, 4], np.int32), False)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)


@case
def attention_mask_3d(rng):
    B, S, Din, N, H = 1, 3, 6, 3, 2
    mask = np.array([[[1, 0, 1], [1, 1, 0], [0, 1, 1]]], np.int32)
    return spec("Attention", [("input", rnd(rng, B, S, Din), False), ("weights", rnd(rng, Din, 3 * N * H, scale=0.5), True),
                              ("bias", rnd(rng, 3 * N * H), True), ("mask_index", mask, False)],
                [("output", TensorProto.FLOAT)], domain=MS, num_heads=N)


@case
def attention_causal_past(rng):
    B, S, P, Din, N, H = 1, 3, 2, 8, 2, 4
    return spec("Attention", [("input", rnd(rng, B, S, Din), False), ("weights", rnd(rng, Din, 3 * N * H, scale=0.5), True),
                              ("bias", rnd(rng, 3 * N * H), True), ("mask_index", None, False),
                              ("past", rnd(rng, 2, B, N, P, H), False)],
                [("output", TensorProto.FLOAT), ("present", TensorProto.FLOAT)], domain=MS, num_heads=N, unidirectional=1)


# ---------------------------------------------------------------------------------------
# A two-layer Llama-style decoder in the layout onnxruntime-genai's model builder writes for
# int4 CPU models: Gather embeddings, SimplifiedLayerNormalization, MatMulNBits projections,
# GroupQueryAttention with rotary embeddings and a KV cache, SkipSimplifiedLayerNormalization
# residuals, a SiLU-gated MLP, seqlens_k / total_sequence_length computed from attention_mask.

def decoder(rng, S, P, V=64, D=64, N=4, Nkv=2, H=16, F=128, L=2):
    T = P + S
    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def nbits(x, name, n_out, k_in):
        B, sc, zp = quantize_nbits(rng, n_out, k_in, 32)
        nodes.append(helper.make_node("MatMulNBits", [x, init(name + ".B", B), init(name + ".scales", sc),
                                                      init(name + ".zp", zp)], [name + ".out"], domain=MS,
                                      K=k_in, N=n_out, bits=4, block_size=32, accuracy_level=4))
        return name + ".out"

    cos, sin = rope_caches(max(64, T), H)
    init("cos_cache", cos)
    init("sin_cache", sin)
    nodes += [helper.make_node("Gather", [init("embed", rnd(rng, V, D)), "input_ids"], ["x0"]),
              helper.make_node("ReduceSum", ["attention_mask", init("axes1", np.array([1], np.int64))], ["mask_sum"], keepdims=1),
              helper.make_node("Sub", ["mask_sum", init("one", np.array(1, np.int64))], ["seqlens64"]),
              helper.make_node("Cast", ["seqlens64"], ["seqlens_k"], to=TensorProto.INT32),
              helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
              helper.make_node("Gather", ["mask_shape", init("idx1", np.array(1, np.int64))], ["total64"]),
              helper.make_node("Cast", ["total64"], ["total_len"], to=TensorProto.INT32),
              helper.make_node("SimplifiedLayerNormalization", ["x0", init("ln.0.1", 1 + rnd(rng, D, scale=0.1))],
                               ["h.0"], axis=-1, epsilon=1e-6)]
    residual, h, outputs, feeds = "x0", "h.0", [], []
    ids = rng.integers(0, V, size=(1, S)).astype(np.int64)
    feeds += [("input_ids", ids, False), ("attention_mask", np.ones((1, T), np.int64), False)]
    for i in range(L):
        q, k, v = nbits(h, f"l{i}.q", N * H, D), nbits(h, f"l{i}.k", Nkv * H, D), nbits(h, f"l{i}.v", Nkv * H, D)
        pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        feeds += [(pk, rnd(rng, 1, Nkv, P, H), False), (pv, rnd(rng, 1, Nkv, P, H), False)]
        nodes.append(helper.make_node("GroupQueryAttention", [q, k, v, pk, pv, "seqlens_k", "total_len", "cos_cache", "sin_cache"],
                                      [f"l{i}.attn", f"present.{i}.key", f"present.{i}.value"], domain=MS,
                                      num_heads=N, kv_num_heads=Nkv, do_rotary=1))
        outputs += [f"present.{i}.key", f"present.{i}.value"]
        o = nbits(f"l{i}.attn", f"l{i}.o", D, N * H)
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [o, residual, init(f"ln.{i}.2", 1 + rnd(rng, D, scale=0.1))],
                                      [f"l{i}.n2", "", "", f"l{i}.res2"], domain=MS, epsilon=1e-6))
        g, u = nbits(f"l{i}.n2", f"l{i}.gate", F, D), nbits(f"l{i}.n2", f"l{i}.up", F, D)
        nodes += [helper.make_node("Sigmoid", [g], [f"l{i}.sig"]), helper.make_node("Mul", [g, f"l{i}.sig"], [f"l{i}.silu"]),
                  helper.make_node("Mul", [f"l{i}.silu", u], [f"l{i}.act"])]
        down = nbits(f"l{i}.act", f"l{i}.down", D, F)
        ln = f"ln.{i + 1}.1" if i + 1 < L else "ln.final"
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [down, f"l{i}.res2", init(ln, 1 + rnd(rng, D, scale=0.1))],
                                      [f"h.{i + 1}", "", "", f"res.{i + 1}"], domain=MS, epsilon=1e-6))
        residual, h = f"res.{i + 1}", f"h.{i + 1}"
    nodes.append(helper.make_node("MatMul", [h, init("lm_head", rnd(rng, D, V, scale=0.2))], ["logits"]))
    ginputs = [helper.make_tensor_value_info(n, ELEM[a.dtype], list(a.shape)) for n, a, _ in feeds]
    goutputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["logits"] + outputs]
    g = helper.make_graph(nodes, "decoder", ginputs, goutputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    s = spec("decoder", feeds, [(n, TensorProto.FLOAT) for n in ["logits"] + outputs], rtol=1e-3, atol=1e-3)
    s.model = m
    # accuracy_level 4: both engines quantize the activations of a decode step (up to 4 rows)
    # to int8, as onnxruntime does; a prompt's rows are multiplied in float by gpugrid, so the
    # reference for more rows runs level 0.
    if S > 4:
        ref = onnx.ModelProto()
        ref.CopyFrom(m)
        for nd in ref.graph.node:
            for a in nd.attribute:
                if a.name == "accuracy_level":
                    a.i = 0
        s.ref_model = ref
    return s


@case
def decoder_prompt(rng):
    return decoder(rng, S=5, P=0)


@case
def decoder_step(rng):
    return decoder(rng, S=1, P=7)


# ---------------------------------------------------------------------------------------
# float16 versions (what fp16 model exports carry): float inputs and outputs in float16,
# math in float.

def as_f16(s):
    s.inputs = [(n, a.astype(np.float16) if a is not None and a.dtype == np.float32 else a, c) for n, a, c in s.inputs]
    s.outputs = [(n, TensorProto.FLOAT16 if t == TensorProto.FLOAT else t) for n, t in s.outputs]
    s.rtol, s.atol = 1e-2, 1e-2
    return s


# float16 MatMul: a float16 weight read as stored (one row: the matrix-vector path; more rows:
# strips converted for sgemm; more than 128 columns so that several strips run), and a batched
# product of two float16 activations.
@case
def matmul_fp16_decode(rng):
    K, N = 99, 1100  # K not a multiple of 4 rows, N two 512-column tiles and a ragged one
    return spec("MatMul", [("A", rnd(rng, 1, 1, K).astype(np.float16), False),
                           ("B", rnd(rng, K, N, scale=0.1).astype(np.float16), True)],
                [("Y", TensorProto.FLOAT16)], rtol=1e-2, atol=1e-2)


@case
def matmul_fp16_prompt(rng):
    K, N = 64, 300
    return spec("MatMul", [("A", rnd(rng, 2, 9, K).astype(np.float16), False),
                           ("B", rnd(rng, K, N, scale=0.1).astype(np.float16), True)],
                [("Y", TensorProto.FLOAT16)], rtol=1e-2, atol=1e-2)


@case
def matmul_fp16_batched(rng):
    return spec("MatMul", [("A", rnd(rng, 2, 3, 5, 16).astype(np.float16), False),
                           ("B", rnd(rng, 2, 3, 16, 7).astype(np.float16), False)],
                [("Y", TensorProto.FLOAT16)], rtol=1e-2, atol=1e-2)


@case
def matmul_nbits_fp16(rng):
    return as_f16(matmul_nbits_decode(rng))


@case
def gqa_decode_rotary_fp16(rng):
    return as_f16(gqa_case(rng, S=1, P=6, rotary=True))


# float16 KV caches: the new positions are converted into the cache, the attention reads the
# positions in use (uneven lengths, a share-buffer past longer than the sequence, a prompt).
@case
def gqa_decode_uneven_past_fp16(rng):
    return as_f16(gqa_decode_uneven_past(rng))


@case
def gqa_decode_share_buffer_fp16(rng):
    return as_f16(gqa_decode_share_buffer(rng))


@case
def gqa_prompt_past_fp16(rng):
    return as_f16(gqa_case(rng, B=1, S=3, P=2, rotary=True))


@case
def skip_simplified_layernorm_fp16(rng):
    return as_f16(skip_simplified_layernorm(rng))


@case
def simplified_layernorm_fp16(rng):
    return as_f16(simplified_layernorm(rng))


@case
def rotary_embedding_fp16(rng):
    return as_f16(rotary_embedding(rng))


@case
def lstm_fp16(rng):
    return as_f16(rnn_case(rng, "LSTM", 4, direction="bidirectional", lens=[5, 3, 4]))


# ---------------------------------------------------------------------------------------

def run_reference(s, model_path):
    import onnxruntime as ort
    if getattr(s, "ref_fn", None) is not None:
        return s.ref_fn(model_path + ".reference.onnx")
    if getattr(s, "ref_model", None) is not None:
        path = model_path + ".reference.onnx"
        onnx.save(s.ref_model, path)
        t = spec(s.op, s.inputs, s.outputs)
        try:
            return run_reference(t, path)
        finally:
            os.remove(path)
    if s.ref_attrs:
        t = spec(s.op, s.inputs, s.outputs, s.domain, **{**s.attrs, **s.ref_attrs})
        path = model_path + ".reference.onnx"
        onnx.save(build(t), path)
        try:
            return run_reference(t, path)
        finally:
            os.remove(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 4
    feeds = {n: a for n, a, c in s.inputs if a is not None and not c}
    names = [n for n, _ in s.outputs if n]
    try:
        sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        return sess.run(names, feeds)
    except Exception as e:  # noqa: BLE001
        if s.attrs.get("layout") != 1:
            raise
        # onnxruntime's CPU kernels take layout 0 only: run the same cell with the batch-major
        # tensors transposed and transpose the results back.
        del e
        t = spec(s.op, [], s.outputs, s.domain, **{**s.attrs, "layout": 0})
        for n, a, c in s.inputs:
            if a is not None and n == "X":
                a = a.transpose(1, 0, 2).copy()
            elif a is not None and n in ("initial_h", "initial_c"):
                a = a.transpose(1, 0, 2).copy()
            t.inputs.append((n, a, c))
        path = model_path + ".layout0.onnx"
        onnx.save(build(t), path)
        outs = run_reference(t, path)
        os.remove(path)
        fixed = []
        for n, y in zip(names, outs):
            fixed.append(y.transpose(2, 0, 1, 3).copy() if n == "Y" else y.transpose(1, 0, 2).copy())
        return fixed


def tensor_entry(name, f, a):
    return {"name": name, "file": f, "shape": list(a.shape), "dtype": str(a.dtype)}


def generate(name, out_dir, seed):
    rng = np.random.default_rng(seed)
    s = CASES[name](rng)
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    model = build(s)
    path = os.path.join(out_dir, name, "model.onnx")
    onnx.save(model, path)
    outs = run_reference(s, path)
    case = {"inputs": [], "outputs": []}
    k = 0
    for n, a, const in s.inputs:
        if a is None or const:
            continue
        f = f"{name}/input_{k}.npy"
        np.save(os.path.join(out_dir, f), a)
        case["inputs"].append(tensor_entry(n, f, a))
        k += 1
    for j, (n, y) in enumerate(zip([n for n, _ in s.outputs if n], outs)):
        f = f"{name}/output_{j}.npy"
        np.save(os.path.join(out_dir, f), y)
        case["outputs"].append(tensor_entry(n, f, y))
    return {"name": name, "model": f"{name}/model.onnx", "rtol": s.rtol, "atol": s.atol,
            "op": (s.domain + ":" if s.domain else "") + s.op, "cases": [case],
            "inputs": case["inputs"], "outputs": case["outputs"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--cases", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(CASES))
        return 0
    if not args.out_dir:
        ap.error("OUT_DIR is required")
    names = [n for n in args.cases.split(",") if n] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown cases: {', '.join(unknown)}")
    import onnxruntime
    os.makedirs(args.out_dir, exist_ok=True)
    manifest = {"opset": OPSET, "seed": SEED, "rtol": 1e-3, "atol": 1e-4,
                "generator": {"script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
                              "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                              "numpy": np.__version__},
                "families": []}
    for name in names:
        manifest["families"].append(generate(name, args.out_dir, SEED + list(CASES).index(name)))
    with open(os.path.join(args.out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(names)} cases to {args.out_dir}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
