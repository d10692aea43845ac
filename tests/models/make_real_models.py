#!/usr/bin/env python3
"""Writes small models in the layout that real exporters give well-known models, with seeded
random weights, their inputs and onnxruntime's outputs, for tests/real_models_test.sh.

    make_real_models.py OUT_DIR [--models a,b] [--list]

Models (tests/models/README.md says what each imitates and how it is written):
  silero_vad   speech activity detector as Silero VAD v5's ONNX: `input` [batch, samples],
               `state` [2, batch, 128], `sr` (int64 scalar); If on sr (16000, else a nested If on
               8000) picks a branch with its own STFT-as-Conv front end, encoder and LSTM; outputs
               the probability and the new state. Its cases form chains: each call's state is the
               previous call's output state (OUT_DIR/chains.txt).
  ocr_det      PaddleOCR DBNet text detector as paddle2onnx writes it (opset 11, input
               [?, 3, ?, ?] with every unknown dim named "?", BatchNormalization, hard swish, SE,
               FPN with Resize, ConvTranspose head, Sigmoid map)
  ocr_rec      PaddleOCR CRNN recogniser as paddle2onnx writes it (opset 11, input [?, 3, 48, ?],
               conv backbone, two bidirectional LSTM layers with initial states sized from the
               batch, MatMul head, Softmax)
  yolo         YOLOv8-style detector exported with torch.onnx.export (Conv+SiLU, C2f with Split,
               SPPF, Resize, DFL head with box decoding on a constant anchor grid, and TopK of
               the best scores as end-to-end exports add)
  yolo_nms     the same with NonMaxSuppression and GatherND appended, as end-to-end exports
  yolo_dynamic the same exported with dynamic height and width (anchor grid made in the graph)
  magika       byte-level file-type classifier as Google's Magika (a Keras model through
               tf2onnx): int32 byte ids, Gather embedding, Dense with Erf GELU,
               LayerNormalization, Conv1D as Transpose/Conv/Squeeze, ReduceMax, Softmax

OUT_DIR/manifest.json has the layout of make_families.py's (compare.py --list reads it).
OUT_DIR/chains.txt: one line per case whose input is an earlier case's output:
FAMILY CASE INPUT_INDEX EARLIER_CASE OUTPUT_NAME. OUT_DIR/bad/expect.txt: models or inputs
the engine must refuse with exit 2 and a one-line error, one line each:
MODEL<TAB>a fragment of the expected message<TAB>input files (paths relative to bad/).
The LLM decoders of the set (onnxruntime-genai model builder layout, fp16 and int4) are made by
tests/llm/make_decoders.py and tested by tests/llm_decoders_test.sh.
Needs numpy, onnx, onnxruntime and torch. Everything is generated; nothing is downloaded.
"""
import argparse
import hashlib
import json
import os
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper

SEED = 4321
RTOL = 1e-3
ATOL = 1e-4


def vi(name, elem=TP.FLOAT, shape=None):
    return h.make_tensor_value_info(name, elem, shape)


def tensor(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def he(rng, *shape, fan_in=None):
    fan_in = fan_in or int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def make_model(graph, opset, ir=8, extra_opsets=()):
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)] + list(extra_opsets))
    m.ir_version = ir
    return m


def op_histogram(graph, counts=None):
    counts = Counter() if counts is None else counts
    for n in graph.node:
        counts[n.op_type] += 1
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                op_histogram(a.g, counts)
    return counts


class Builder:
    """Appends nodes and initializers, naming nodes as paddle2onnx does (p2o.Op.N)."""

    def __init__(self, prefix="p2o"):
        self.nodes, self.inits, self.prefix, self.count = [], [], prefix, Counter()

    def init(self, name, arr):
        self.inits.append(tensor(name, arr))
        return name

    def op(self, op_type, inputs, outputs, **attrs):
        k = self.count[op_type]
        self.count[op_type] += 1
        outs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.nodes.append(h.make_node(op_type, inputs, outs, name=f"{self.prefix}.{op_type}.{k}", **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, name, arr):
        return self.op("Constant", [], name, value=tensor(name + "_value", arr))


# ----------------------------------------------------------------------------- Silero VAD

def stft_basis(n_fft):
    """Rows: real parts then imaginary parts of a Hann-windowed DFT, as a Conv1d weight."""
    bins = n_fft // 2 + 1
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    k = np.arange(bins)[:, None]
    re = np.cos(2 * np.pi * k * n / n_fft) * window
    im = -np.sin(2 * np.pi * k * n / n_fft) * window
    return np.concatenate([re, im])[:, None, :].astype(np.float32)


def vad_branch(rng, outer_inits, tag, n_fft, hop, pad):
    """The graph of one sample rate: reflect Pad, STFT as Conv1d, magnitude, four Conv1d+ReLU,
    an LSTM started from `state`, ReLU, Conv1d to one channel, Sigmoid, mean over time. Weights
    are main-graph initializers read from the branch (as torch exports a scripted module);
    the STFT basis is a Constant inside the branch."""
    bins = n_fft // 2 + 1
    p = f"_model{tag}"
    b = Builder(prefix=f"/{p}")

    def w(name, arr):
        outer_inits.append(tensor(f"{p}.{name}", arr))
        return f"{p}.{name}"

    b.const(f"{p}/two", np.array(2.0, np.float32))
    b.const(f"{p}/pads", np.array([0, 0, 0, 0, 0, pad], np.int64))
    b.const(f"{p}/axes0", np.array([1], np.int64))
    b.op("Unsqueeze", ["input", f"{p}/axes0"], f"{p}/x3")
    b.op("Pad", [f"{p}/x3", f"{p}/pads"], f"{p}/padded", mode="reflect")
    b.const(f"{p}/stft/forward_basis_buffer", stft_basis(n_fft))
    b.op("Conv", [f"{p}/padded", f"{p}/stft/forward_basis_buffer"], f"{p}/spec", strides=[hop], pads=[0, 0],
         kernel_shape=[n_fft], dilations=[1], group=1)
    for name, lo, hi in (("real", 0, bins), ("imag", bins, 2 * bins)):
        b.const(f"{p}/{name}_start", np.array([lo], np.int64))
        b.const(f"{p}/{name}_end", np.array([hi], np.int64))
        b.op("Slice", [f"{p}/spec", f"{p}/{name}_start", f"{p}/{name}_end", f"{p}/axes0"], f"{p}/{name}")
        b.op("Pow", [f"{p}/{name}", f"{p}/two"], f"{p}/{name}_sq")
    b.op("Add", [f"{p}/real_sq", f"{p}/imag_sq"], f"{p}/power")
    b.op("Sqrt", [f"{p}/power"], f"{p}/mag")
    x, c_in = f"{p}/mag", bins
    for i, (c_out, stride) in enumerate(((32, 1), (64, 2), (64, 2), (128, 1))):
        wt = w(f"encoder.{i}.reparam_conv.weight", he(rng, c_out, c_in, 3))
        bs = w(f"encoder.{i}.reparam_conv.bias", (rng.standard_normal(c_out) * 0.05).astype(np.float32))
        b.op("Conv", [x, wt, bs], f"{p}/encoder.{i}/conv", strides=[stride], pads=[1, 1], kernel_shape=[3],
             dilations=[1], group=1)
        x = b.op("Relu", [f"{p}/encoder.{i}/conv"], f"{p}/encoder.{i}/relu")
        c_in = c_out
    hdim = 128
    s = 1 / np.sqrt(hdim)
    W = w("decoder.rnn.weight_ih", (rng.uniform(-s, s, (1, 4 * hdim, hdim)) * 2).astype(np.float32))
    R = w("decoder.rnn.weight_hh", (rng.uniform(-s, s, (1, 4 * hdim, hdim)) * 2).astype(np.float32))
    B = w("decoder.rnn.bias", rng.uniform(-s, s, (1, 8 * hdim)).astype(np.float32))
    b.op("Transpose", [x], f"{p}/decoder/seq", perm=[2, 0, 1])
    for i, nm in enumerate(("h", "c")):
        b.const(f"{p}/decoder/{nm}_index", np.array(i, np.int64))
        b.op("Gather", ["state", f"{p}/decoder/{nm}_index"], f"{p}/decoder/{nm}", axis=0)
        b.const(f"{p}/decoder/{nm}_axes", np.array([0], np.int64))
        b.op("Unsqueeze", [f"{p}/decoder/{nm}", f"{p}/decoder/{nm}_axes"], f"{p}/decoder/{nm}0")
    b.op("LSTM", [f"{p}/decoder/seq", W, R, B, "", f"{p}/decoder/h0", f"{p}/decoder/c0"],
         [f"{p}/decoder/Y", f"{p}/decoder/Y_h", f"{p}/decoder/Y_c"], hidden_size=hdim)
    b.op("Concat", [f"{p}/decoder/Y_h", f"{p}/decoder/Y_c"], f"{p}/stateN", axis=0)
    b.const(f"{p}/decoder/squeeze_axes", np.array([1], np.int64))
    b.op("Squeeze", [f"{p}/decoder/Y", f"{p}/decoder/squeeze_axes"], f"{p}/decoder/y")
    b.op("Relu", [f"{p}/decoder/y"], f"{p}/decoder/relu")
    b.op("Transpose", [f"{p}/decoder/relu"], f"{p}/decoder/bct", perm=[1, 2, 0])
    wt = w("decoder.decoder.2.weight", 4 * he(rng, 1, hdim, 1))  # probabilities well spread
    bs = w("decoder.decoder.2.bias", np.array([0.1], np.float32))
    b.op("Conv", [f"{p}/decoder/bct", wt, bs], f"{p}/decoder/logit", kernel_shape=[1], strides=[1], pads=[0, 0],
         dilations=[1], group=1)
    b.op("Sigmoid", [f"{p}/decoder/logit"], f"{p}/decoder/prob")
    b.op("ReduceMean", [f"{p}/decoder/prob"], f"{p}/out", axes=[2], keepdims=0)
    return h.make_graph(b.nodes, f"vad{tag}", [], [vi(f"{p}/out"), vi(f"{p}/stateN")])


def silero_vad(rng):
    inits = []
    g16 = vad_branch(rng, inits, "", n_fft=64, hop=32, pad=32)
    g8 = vad_branch(rng, inits, "_8k", n_fft=32, hop=16, pad=16)
    # Any other rate: probability 0, state unchanged.
    other = Builder(prefix="/other")
    other.op("ReduceMean", ["input"], "/other/mean", axes=[1], keepdims=1)
    other.const("/other/zero", np.array(0.0, np.float32))
    other.op("Mul", ["/other/mean", "/other/zero"], "/other/out")
    other.op("Identity", ["state"], "/other/stateN")
    g_other = h.make_graph(other.nodes, "vad_other", [], [vi("/other/out"), vi("/other/stateN")])
    else8 = Builder(prefix="/sr8")
    else8.const("/sr8/8000", np.array(8000, np.int64))
    else8.op("Equal", ["sr", "/sr8/8000"], "/sr8/is8k")
    else8.op("If", ["/sr8/is8k"], ["/sr8/out", "/sr8/stateN"], then_branch=g8, else_branch=g_other)
    g_else = h.make_graph(else8.nodes, "not16k", [], [vi("/sr8/out"), vi("/sr8/stateN")])
    top = Builder(prefix="")
    top.const("/16000", np.array(16000, np.int64))
    top.op("Equal", ["sr", "/16000"], "/is16k")
    top.op("If", ["/is16k"], ["output", "stateN"], then_branch=g16, else_branch=g_else)
    graph = h.make_graph(top.nodes, "main_graph",
                         [vi("input", shape=["batch", "samples"]), vi("state", shape=[2, "batch", 128]),
                          vi("sr", TP.INT64, [])],
                         [vi("output", shape=["batch", 1]), vi("stateN", shape=[2, "batch", 128])], initializer=inits)
    m = make_model(graph, 16)

    def audio(batch, n):
        t = np.arange(n) / 16000.0
        tone = np.sin(2 * np.pi * rng.uniform(200, 900, (batch, 1)) * t)
        return (0.3 * tone + 0.2 * rng.standard_normal((batch, n))).astype(np.float32)

    zero = np.zeros((2, 2, 128), np.float32)
    sr16, sr8 = np.array(16000, np.int64), np.array(8000, np.int64)
    # 16 kHz: 512 new samples plus 64 of context per call; 8 kHz: 256 plus 32.
    cases = [[audio(2, 576), zero, sr16], [audio(2, 576), None, sr16], [audio(2, 576), None, sr16],
             [audio(2, 288), zero, sr8], [audio(2, 288), None, sr8],
             [audio(1, 576), np.zeros((2, 1, 128), np.float32), sr16],
             [audio(2, 400), rng.standard_normal((2, 2, 128)).astype(np.float32), np.array(44100, np.int64)]]
    chains = {1: (1, 0, "stateN"), 2: (1, 1, "stateN"), 4: (1, 3, "stateN")}
    return m, cases, chains


# ----------------------------------------------------------------------------- PaddleOCR (paddle2onnx)

class Paddle(Builder):
    """paddle2onnx naming: tensors op_N.tmp_K, weights <layer>_weights, BN <layer>_bn_*."""

    def __init__(self, rng):
        super().__init__()
        self.rng, self.tmp = rng, Counter()

    def t(self, kind, k=0):
        n = self.tmp[kind]
        self.tmp[kind] += 1
        return f"{kind}_{n}.tmp_{k}"

    def conv_bn(self, x, layer, c_in, c_out, k=3, stride=1, act="relu", bn=True, group=1):
        wt = self.init(f"{layer}_weights", he(self.rng, c_out, c_in // group, k if isinstance(k, int) else k[0],
                                              k if isinstance(k, int) else k[1]))
        ks = [k, k] if isinstance(k, int) else list(k)
        st = [stride, stride] if isinstance(stride, int) else list(stride)
        pad = [ks[0] // 2, ks[1] // 2, ks[0] // 2, ks[1] // 2]
        y = self.op("Conv", [x, wt], self.t("conv2d"), kernel_shape=ks, strides=st, pads=pad, dilations=[1, 1],
                    group=group)
        if bn:
            r = self.rng
            sc = self.init(f"{layer}_bn_scale", r.uniform(0.6, 1.4, c_out).astype(np.float32))
            of = self.init(f"{layer}_bn_offset", (r.standard_normal(c_out) * 0.1).astype(np.float32))
            mu = self.init(f"{layer}_bn_mean", (r.standard_normal(c_out) * 0.1).astype(np.float32))
            var = self.init(f"{layer}_bn_variance", r.uniform(0.5, 1.5, c_out).astype(np.float32))
            y = self.op("BatchNormalization", [y, sc, of, mu, var], self.t("batch_norm", 2), epsilon=1e-5,
                        momentum=0.9)
        if act == "relu":
            y = self.op("Relu", [y], self.t("relu"))
        elif act == "hardswish":  # HardSwish is opset 14: paddle2onnx writes x * HardSigmoid(x) at 11
            g = self.op("HardSigmoid", [y], self.t("hardswish", 1), alpha=1 / 6, beta=0.5)
            y = self.op("Mul", [y, g], self.t("hardswish"))
        return y

    def upsample(self, x, like):
        """F.upsample(x, size=like.shape[2:], mode="nearest") as paddle2onnx writes it at opset 11:
        Resize with an empty roi, an empty scales and sizes built from the shapes."""
        hw = self.op("Slice", [self.op("Shape", [like], self.t("shape")), self.const(self.t("starts"), np.array([2], np.int64)),
                               self.const(self.t("ends"), np.array([4], np.int64))], self.t("slice"))
        nc = self.op("Slice", [self.op("Shape", [x], self.t("shape")), self.const(self.t("starts"), np.array([0], np.int64)),
                               self.const(self.t("ends"), np.array([2], np.int64))], self.t("slice"))
        sizes = self.op("Concat", [nc, hw], self.t("concat"), axis=0)
        roi = self.const(self.t("roi"), np.zeros(0, np.float32))
        scales = self.const(self.t("scales"), np.zeros(0, np.float32))
        return self.op("Resize", [x, roi, scales, sizes], self.t("nearest_interp_v2"), mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def p2o_model(p, inputs, outputs):
    graph = h.make_graph(p.nodes, "Model from PaddlePaddle.", inputs, outputs, initializer=p.inits)
    m = make_model(graph, 11, ir=6)
    m.producer_name, m.producer_version = "PaddlePaddle", "1.0"
    return m


def ocr_det(rng):
    p = Paddle(rng)
    x = p.conv_bn("x", "conv1", 3, 8, stride=2, act="hardswish")            # 1/2
    c2 = p.conv_bn(x, "conv2", 8, 16, stride=2)                             # 1/4
    c3 = p.conv_bn(c2, "conv3", 16, 24, stride=2, act="hardswish")          # 1/8
    # squeeze-and-excitation, as MobileNetV3's blocks
    s = p.op("GlobalAveragePool", [c3], p.t("pool2d"))
    s = p.op("Conv", [s, p.init("conv3_se_1_weights", he(rng, 6, 24, 1, 1)),
                      p.init("conv3_se_1_offset", np.zeros(6, np.float32))], p.t("conv2d"), kernel_shape=[1, 1])
    s = p.op("Relu", [s], p.t("relu"))
    s = p.op("Conv", [s, p.init("conv3_se_2_weights", he(rng, 24, 6, 1, 1)),
                      p.init("conv3_se_2_offset", np.zeros(24, np.float32))], p.t("conv2d"), kernel_shape=[1, 1])
    s = p.op("HardSigmoid", [s], p.t("hardsigmoid"), alpha=0.2, beta=0.5)
    c3 = p.op("Mul", [c3, s], p.t("elementwise_mul"))
    c4 = p.conv_bn(c3, "conv4", 24, 32, stride=2, act="hardswish")          # 1/16
    c5 = p.conv_bn(c4, "conv5", 32, 48, stride=2)                           # 1/32
    # DBFPN
    ins = [p.conv_bn(c, f"neck_in{i}", ch, 32, k=1, act=None, bn=False)
           for i, (c, ch) in enumerate(((c2, 16), (c3, 24), (c4, 32), (c5, 48)), start=2)]
    # Upsampled to the size of the finer map, so that any size divisible by 4 works (48 x 192:
    # a 1/32 map of 2 x 6 goes up to 3 x 12, not 4 x 12).
    out4 = p.op("Add", [ins[2], p.upsample(ins[3], ins[2])], p.t("elementwise_add"))
    out3 = p.op("Add", [ins[1], p.upsample(out4, ins[1])], p.t("elementwise_add"))
    out2 = p.op("Add", [ins[0], p.upsample(out3, ins[0])], p.t("elementwise_add"))
    ps = []
    for i, f in enumerate((ins[3], out4, out3, out2)):
        q = p.conv_bn(f, f"neck_p{5 - i}", 32, 8, act=None, bn=False)
        ps.append(p.upsample(q, out2) if i < 3 else q)
    fuse = p.op("Concat", ps, p.t("concat"), axis=1)
    # DBHead (binarize branch)
    y = p.conv_bn(fuse, "binarize_conv1", 32, 8)
    for i, c_out in enumerate((8, 1)):
        wt = p.init(f"binarize_conv{i + 2}_weights", he(rng, 8, c_out, 2, 2, fan_in=8))
        bs = p.init(f"binarize_conv{i + 2}_offset", (rng.standard_normal(c_out) * 0.1).astype(np.float32))
        y = p.op("ConvTranspose", [y, wt, bs], p.t("conv2d_transpose"), kernel_shape=[2, 2], strides=[2, 2],
                 pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
        if i == 0:
            r = rng
            y = p.op("BatchNormalization",
                     [y, p.init("binarize_bn2_scale", r.uniform(0.6, 1.4, 8).astype(np.float32)),
                      p.init("binarize_bn2_offset", (r.standard_normal(8) * 0.1).astype(np.float32)),
                      p.init("binarize_bn2_mean", (r.standard_normal(8) * 0.1).astype(np.float32)),
                      p.init("binarize_bn2_variance", r.uniform(0.5, 1.5, 8).astype(np.float32))],
                     p.t("batch_norm", 2), epsilon=1e-5, momentum=0.9)
            y = p.op("Relu", [y], p.t("relu"))
    p.op("Sigmoid", [y], "sigmoid_0.tmp_0")
    m = p2o_model(p, [vi("x", shape=["?", 3, "?", "?"])], [vi("sigmoid_0.tmp_0", shape=["?", 1, "?", "?"])])
    img = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)  # noqa: E731  (normalised pixels)
    return m, [[img(1, 3, 48, 192)], [img(1, 3, 64, 320)], [img(2, 3, 96, 160)]], {}


def lstm_p2o(p, x, layer, c_in, hdim):
    """paddle.nn.LSTM(direction='bidirect', time_major=False) as paddle2onnx writes one layer."""
    r = p.rng
    s = 1 / np.sqrt(hdim)
    W = p.init(f"{layer}_weight_ih", r.uniform(-s, s, (2, 4 * hdim, c_in)).astype(np.float32))
    R = p.init(f"{layer}_weight_hh", r.uniform(-s, s, (2, 4 * hdim, hdim)).astype(np.float32))
    B = p.init(f"{layer}_bias", r.uniform(-s, s, (2, 8 * hdim)).astype(np.float32))
    xt = p.op("Transpose", [x], p.t("transpose"), perm=[1, 0, 2])           # [T, N, C]
    shp = p.op("Shape", [xt], p.t("shape"))
    batch = p.op("Slice", [shp, p.const(p.t("starts"), np.array([1], np.int64)),
                           p.const(p.t("ends"), np.array([2], np.int64)),
                           p.const(p.t("axes"), np.array([0], np.int64))], p.t("slice"))
    dims = p.op("Concat", [p.const(p.t("dirs"), np.array([2], np.int64)), batch,
                           p.const(p.t("hidden"), np.array([hdim], np.int64))], p.t("concat"), axis=0)
    h0 = p.op("ConstantOfShape", [dims], p.t("fill_constant_batch_size_like"),
              value=tensor("zero", np.zeros(1, np.float32)))
    c0 = p.op("ConstantOfShape", [dims], p.t("fill_constant_batch_size_like"),
              value=tensor("zero", np.zeros(1, np.float32)))
    y, _, _ = p.op("LSTM", [xt, W, R, B, "", h0, c0], [p.t("lstm"), p.t("lstm", 1), p.t("lstm", 2)],
                   hidden_size=hdim, direction="bidirectional")                  # [T, 2, N, H]
    y = p.op("Transpose", [y], p.t("transpose"), perm=[0, 2, 1, 3])
    y = p.op("Reshape", [y, p.const(p.t("shape"), np.array([0, 0, -1], np.int64))], p.t("reshape2"))
    return p.op("Transpose", [y], p.t("transpose"), perm=[1, 0, 2])          # [N, T, 2H]


def ocr_rec(rng):
    p = Paddle(rng)
    x = p.conv_bn("x", "conv1", 3, 16, stride=2)                            # 24 x W/2
    x = p.conv_bn(x, "conv2", 16, 32, stride=2, act="hardswish")            # 12 x W/4
    x = p.conv_bn(x, "conv3", 32, 48, stride=(2, 1))                        # 6 x W/4
    x = p.conv_bn(x, "conv4", 48, 64, stride=(2, 1), act="hardswish")       # 3 x W/4
    x = p.op("MaxPool", [x], p.t("pool2d"), kernel_shape=[3, 2], strides=[3, 2], pads=[0, 0, 0, 0])  # 1 x W/8
    x = p.op("Squeeze", [x], p.t("squeeze"), axes=[2])                      # Im2Seq: [N, C, T]
    x = p.op("Transpose", [x], p.t("transpose"), perm=[0, 2, 1])            # [N, T, C]
    x = lstm_p2o(p, x, "lstm_cell_0", 64, 32)
    x = lstm_p2o(p, x, "lstm_cell_1", 64, 32)
    n_cls = 37
    x = p.op("MatMul", [x, p.init("ctc_fc_w_attr", 8 * he(rng, 64, n_cls, fan_in=64))], p.t("linear"))
    x = p.op("Add", [x, p.init("ctc_fc_b_attr", (rng.standard_normal(n_cls) * 0.1).astype(np.float32))],
             p.t("linear", 1))
    p.op("Softmax", [x], "softmax_0.tmp_0", axis=2)
    m = p2o_model(p, [vi("x", shape=["?", 3, 48, "?"])], [vi("softmax_0.tmp_0", shape=["?", "?", n_cls])])
    img = lambda *s: rng.uniform(-1, 1, s).astype(np.float32)  # noqa: E731
    return m, [[img(1, 3, 48, 192)], [img(2, 3, 48, 320)], [img(1, 3, 48, 100)]], {}


# ----------------------------------------------------------------------------- YOLOv8-style (torch export)

_YOLO = {}


def yolo(rng):
    if "export" not in _YOLO:
        _YOLO["export"] = export_yolo(rng)
    return _YOLO["export"]


def yolo_nms(_rng):
    """The same export with NonMaxSuppression appended, as end-to-end ONNX exports of YOLO do:
    boxes (center format) and scores sliced from output0, NMS per class, GatherND of the kept
    boxes and scores."""
    m, cases, chains, _ = yolo(np.random.default_rng(SEED + list(MODELS).index("yolo")))
    # The thresholds sit in the middle of the widest gap between the scores (overlaps) of the
    # cases near 0.55 (0.45), so that the selection does not hinge on rounding.
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [sess.run(["output0"], {"images": img})[0] for (img,) in cases]

    def gap_middle(values, lo, hi):
        v = np.unique(np.concatenate(values).astype(np.float64))
        v = np.concatenate([[lo], v[(v > lo) & (v < hi)], [hi]])
        i = int(np.argmax(np.diff(v)))
        assert v[i + 1] - v[i] > 1e-4, "no gap for a threshold"
        return float((v[i] + v[i + 1]) / 2)

    score_thr = gap_middle([o[:, 4:].ravel() for o in outs], 0.53, 0.57)
    ious = []  # between the boxes that pass the score threshold for some class
    for out in outs:
        for xywh, sc in zip(out[:, :4].transpose(0, 2, 1), out[:, 4:]):
            xywh = xywh[(sc > score_thr).any(0)]
            lo, hi = xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2
            inter = np.prod(np.clip(np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None]), 0, None), -1)
            area = np.prod(hi - lo, -1)
            ious.append((inter / (area[:, None] + area[None] - inter)).ravel())
    iou_thr = gap_middle(ious, 0.4, 0.5)
    m = onnx.ModelProto.FromString(m.SerializeToString())
    g = m.graph
    del g.output[:]
    b = Builder(prefix="/end2end")
    for name, arr in (("starts4", [0]), ("ends4", [4]), ("starts_cls", [4]), ("ends_cls", [1 << 30]), ("axis1", [1]),
                      ("max_out", [5]), ("iou", [iou_thr]), ("score", [score_thr]), ("bi", [0, 2])):
        b.const(f"/end2end/{name}", np.array(arr, np.float32 if name in ("iou", "score") else np.int64))
    b.op("Slice", ["output0", "/end2end/starts4", "/end2end/ends4", "/end2end/axis1"], "/end2end/xywh")
    b.op("Transpose", ["/end2end/xywh"], "/end2end/boxes", perm=[0, 2, 1])
    b.op("Slice", ["output0", "/end2end/starts_cls", "/end2end/ends_cls", "/end2end/axis1"], "/end2end/scores")
    b.op("NonMaxSuppression", ["/end2end/boxes", "/end2end/scores", "/end2end/max_out", "/end2end/iou",
                               "/end2end/score"], "selected_indices", center_point_box=1)
    b.op("Gather", ["selected_indices", "/end2end/bi"], "/end2end/batch_box", axis=1)
    b.op("GatherND", ["/end2end/boxes", "/end2end/batch_box"], "det_boxes")
    b.op("GatherND", ["/end2end/scores", "selected_indices"], "det_scores")
    g.node.extend(b.nodes)
    g.output.extend([vi("selected_indices", TP.INT64, ["n", 3]), vi("det_boxes", shape=["n", 4]),
                     vi("det_scores", shape=["n"])])
    return m, cases, chains


def yolo_dynamic(rng):
    """Exported with dynamic height and width, as `export(dynamic=True)` does: the anchor grid
    is made in the graph from the feature maps' shapes (Range, Expand, ...)."""
    return export_yolo(rng, dynamic=True)


def export_yolo(rng, dynamic=False):
    import torch
    from torch import nn
    torch.manual_seed(int(rng.integers(1 << 30)))

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Bottleneck(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)

        def forward(self, x):
            return x + self.cv2(self.cv1(x))

    class C2f(nn.Module):
        def __init__(self, c1, c2, n=1):
            super().__init__()
            self.c = c2 // 2
            self.cv1 = Conv(c1, 2 * self.c, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.cv1, self.cv2 = Conv(c1, c1 // 2, 1), Conv(c1 * 2, c2, 1)
            self.m = nn.MaxPool2d(5, 1, 2)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.m(x)
            y2 = self.m(y1)
            return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))

    class DFL(nn.Module):
        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    H, W, NC, REG = 96, 128, 5, 16
    strides = (8, 16, 32)

    class YOLO(nn.Module):
        def __init__(self):
            super().__init__()
            self.b0, self.b1, self.b2 = Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), C2f(16, 16)
            self.b3, self.b4 = Conv(16, 32, 3, 2), C2f(32, 32)
            self.b5, self.b6 = Conv(32, 48, 3, 2), C2f(48, 48)
            self.b7, self.b8, self.b9 = Conv(48, 64, 3, 2), C2f(64, 64), SPPF(64, 64)
            self.up = nn.Upsample(None, 2, "nearest")
            self.n12, self.n15 = C2f(64 + 48, 48), C2f(48 + 32, 32)
            self.n16, self.n18 = Conv(32, 32, 3, 2), C2f(32 + 48, 48)
            self.n19, self.n21 = Conv(48, 48, 3, 2), C2f(48 + 64, 64)
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, 16, 3), Conv(16, 16, 3), nn.Conv2d(16, 4 * REG, 1))
                                     for c in (32, 48, 64))
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, 16, 3), Conv(16, 16, 3), nn.Conv2d(16, NC, 1))
                                     for c in (32, 48, 64))
            self.dfl = DFL(REG)
            anchors, stride_t = [], []
            for s in strides:
                sy, sx = torch.meshgrid(torch.arange(H // s) + 0.5, torch.arange(W // s) + 0.5, indexing="ij")
                anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
                stride_t.append(torch.full((H // s * W // s, 1), float(s)))
            self.register_buffer("anchors", torch.cat(anchors).transpose(0, 1))
            self.register_buffer("strides", torch.cat(stride_t).transpose(0, 1))

        def forward(self, x):
            p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
            p4 = self.b6(self.b5(p3))
            p5 = self.b9(self.b8(self.b7(p4)))
            x12 = self.n12(torch.cat((self.up(p5), p4), 1))
            x15 = self.n15(torch.cat((self.up(x12), p3), 1))
            x18 = self.n18(torch.cat((self.n16(x15), x12), 1))
            x21 = self.n21(torch.cat((self.n19(x18), p5), 1))
            feats = [torch.cat((self.cv2[i](f), self.cv3[i](f)), 1) for i, f in enumerate((x15, x18, x21))]
            b = feats[0].shape[0]
            x_cat = torch.cat([f.view(b, 4 * REG + NC, -1) for f in feats], 2)
            box, cls = x_cat.split((4 * REG, NC), 1)
            lt, rb = self.dfl(box).chunk(2, 1)
            anchors, strides_ = self.anchors, self.strides
            if dynamic:  # ultralytics' make_anchors
                pts, sts = [], []
                for f, s in zip(feats, strides):
                    h_, w_ = f.shape[2:]
                    sy, sx = torch.meshgrid(torch.arange(h_, dtype=torch.float) + 0.5,
                                            torch.arange(w_, dtype=torch.float) + 0.5, indexing="ij")
                    pts.append(torch.stack((sx, sy), -1).view(-1, 2))
                    sts.append(torch.full((h_ * w_, 1), float(s), dtype=torch.float))
                anchors, strides_ = torch.cat(pts).transpose(0, 1), torch.cat(sts).transpose(0, 1)
            x1y1, x2y2 = anchors.unsqueeze(0) - lt, anchors.unsqueeze(0) + rb
            dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides_
            scores = cls.sigmoid()
            y = torch.cat((dbox, scores), 1)
            best, idx = scores.amax(1).topk(10, dim=1)
            return y, best, idx

    model = YOLO()
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d) and mod is not model.dfl.conv:
                fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * np.sqrt(2.0 / fan_in))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.5)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) * 0.8 + 0.6)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
    model.eval()
    import io
    buf = io.BytesIO()
    example = torch.rand(1, 3, H, W, generator=gen)
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}, "scores": {0: "batch"}, "indices": {0: "batch"}}
    if dynamic:
        axes["images"].update({2: "height", 3: "width"})
        axes["output0"][2] = "anchors"
    torch.onnx.export(model, example, buf, opset_version=17, input_names=["images"],
                      output_names=["output0", "scores", "indices"], do_constant_folding=True, dynamic_axes=axes)
    m = onnx.load_from_string(buf.getvalue())
    cases = [[torch.rand(1, 3, H, W, generator=gen).numpy()], [torch.rand(2, 3, H, W, generator=gen).numpy()]]
    if dynamic:
        cases.append([torch.rand(1, 3, 64, 160, generator=gen).numpy()])
    with torch.no_grad():
        ref = model(torch.from_numpy(cases[1][0]))[0].numpy()
    return m, cases, {}, ref


# ----------------------------------------------------------------------------- Magika (tf2onnx)

def magika(rng):
    N, EMB, GROUP, HID, N_CLS = 512, 16, 4, 64, 12
    b = Builder(prefix="model")
    ins = []

    def w(name, arr):
        ins.append(tensor(name, arr))
        return name

    emb = w("model/embedding/embedding_lookup/Read/ReadVariableOp:0", (rng.standard_normal((257, EMB)) * 0.7)
            .astype(np.float32))
    b.op("Gather", [emb, "bytes"], "model/embedding/embedding_lookup:0", axis=0)
    b.op("Reshape", ["model/embedding/embedding_lookup:0",
                     w("const_fold_opt__reshape", np.array([-1, N // GROUP, EMB * GROUP], np.int64))],
         "model/reshape/Reshape:0")

    def dense(x, name, c_in, c_out):
        y = b.op("MatMul", [x, w(f"model/{name}/Tensordot/ReadVariableOp:0", he(rng, c_in, c_out, fan_in=c_in))],
                 f"model/{name}/Tensordot:0")
        return b.op("Add", [y, w(f"model/{name}/BiasAdd/ReadVariableOp:0",
                                 (rng.standard_normal(c_out) * 0.1).astype(np.float32))], f"model/{name}/BiasAdd:0")

    def layer_norm(x, name, c):
        return b.op("LayerNormalization",
                    [x, w(f"model/{name}/scale", rng.uniform(0.7, 1.3, c).astype(np.float32)),
                     w(f"model/{name}/offset", (rng.standard_normal(c) * 0.1).astype(np.float32))],
                    f"model/{name}/add:0", axis=-1, epsilon=1e-3)

    x = dense("model/reshape/Reshape:0", "dense", EMB * GROUP, HID)
    # tf.keras gelu (approximate=False) as tf2onnx writes it
    d = b.op("Div", [x, w("Const_sqrt2", np.array(np.sqrt(2), np.float32))], "model/dense/Gelu/truediv:0")
    e = b.op("Erf", [d], "model/dense/Gelu/Erf:0")
    a = b.op("Add", [e, w("Const_one", np.array(1, np.float32))], "model/dense/Gelu/add:0")
    m_ = b.op("Mul", [x, a], "model/dense/Gelu/mul_1:0")
    x = b.op("Mul", [m_, w("Const_half", np.array(0.5, np.float32))], "model/dense/Gelu/mul:0")
    x = layer_norm(x, "layer_normalization", HID)
    # Conv1D(kernel 8, valid) as tf2onnx writes Keras' ExpandDims + Conv2D(NHWC)
    x = b.op("Unsqueeze", [x, w("const_axes_1", np.array([1], np.int64))], "model/conv1d/Conv1D/ExpandDims:0")
    x = b.op("Transpose", [x], "model/conv1d/Conv1D__6:0", perm=[0, 3, 1, 2])
    x = b.op("Conv", [x, w("model/conv1d/Conv1D/ExpandDims_1:0", he(rng, HID, HID, 1, 8)),
                      w("model/conv1d/BiasAdd/ReadVariableOp:0", (rng.standard_normal(HID) * 0.1).astype(np.float32))],
             "model/conv1d/BiasAdd:0", kernel_shape=[1, 8], strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0])
    x = b.op("Relu", [x], "model/conv1d/Relu:0")
    x = b.op("Transpose", [x], "model/conv1d/Relu__9:0", perm=[0, 2, 3, 1])
    x = b.op("Squeeze", [x, "const_axes_1"], "model/conv1d/Conv1D/Squeeze:0")
    x = b.op("ReduceMax", [x], "model/global_max_pooling1d/Max:0", axes=[1], keepdims=0)
    x = dense(x, "dense_1", HID, HID // 2)
    x = b.op("Relu", [x], "model/dense_1/Relu:0")
    x = layer_norm(x, "layer_normalization_1", HID // 2)
    x = dense(x, "target_label", HID // 2, N_CLS)
    b.op("Softmax", [x], "target_label", axis=-1)
    graph = h.make_graph(b.nodes, "tf2onnx", [vi("bytes", TP.INT32, ["unk__24", N])],
                         [vi("target_label", shape=["unk__25", N_CLS])], initializer=ins)
    m = make_model(graph, 17)
    m.producer_name, m.producer_version = "tf2onnx", "1.16.1 15c810"

    def sample(batch):
        x = rng.integers(0, 256, (batch, N)).astype(np.int32)
        x[0, 400:] = 256                       # a short file: padding token at the end
        x[-1, :64] = rng.integers(32, 127, 64)  # printable text at the beginning
        return x

    return m, [[sample(3)], [sample(1)]], {}


# ----------------------------------------------------------------------------- bad models and inputs

def matmulnbits(k, n, block, blocks_in_b):
    blob = block // 2
    bq = np.random.default_rng(1).integers(0, 255, (n, blocks_in_b, blob)).astype(np.uint8)
    scales = np.ones(n * blocks_in_b, np.float32)
    node = h.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft", K=k, N=n, bits=4,
                       block_size=block)
    g = h.make_graph([node], "g", [vi("A", shape=[1, k])], [vi("Y", shape=[1, n])],
                     initializer=[tensor("B", bq), tensor("scales", scales)])
    return make_model(g, 17, extra_opsets=[h.make_opsetid("com.microsoft", 1)])


def bad_cases(root):
    """(model path relative to bad/, message fragment, inputs) the engine must refuse."""
    rng = np.random.default_rng(99)
    out = [("matmulnbits_blocks.onnx", matmulnbits(64, 8, 32, 3), "block", [np.ones((1, 64), np.float32)]),
           ("matmulnbits_block_size.onnx", matmulnbits(64, 8, 24, 3), "block", [np.ones((1, 64), np.float32)])]
    a = rng.standard_normal((2, 576)).astype(np.float32)
    sr = np.array(16000, np.int64)
    out.append(("../silero_vad/model.onnx", "state", [a, np.zeros((2, 2, 64), np.float32), sr]))
    out.append(("../silero_vad/model.onnx", "int64", [a, np.zeros((2, 2, 128), np.float32), np.array(16000.0, np.float32)]))
    out.append(("../silero_vad/model.onnx", "sr", [a, np.zeros((2, 2, 128), np.float32), np.array([16000], np.int64)]))
    out.append(("../ocr_det/model.onnx", "x", [rng.standard_normal((1, 4, 64, 64)).astype(np.float32)]))
    out.append(("../ocr_rec/model.onnx", "x", [rng.standard_normal((1, 3, 32, 96)).astype(np.float32)]))
    out.append(("../silero_vad/model.onnx", "initial_h", [a, np.zeros((2, 1, 128), np.float32), sr]))
    ids = rng.integers(0, 256, (1, 512)).astype(np.int32)
    ids[0, 7] = 300
    out.append(("../magika/model.onnx", "300", [ids]))
    out.append(("../yolo/model.onnx", "96, 128", [rng.random((1, 3, 64, 64)).astype(np.float32)]))
    return out


# ----------------------------------------------------------------------------- main

MODELS = {"silero_vad": silero_vad, "ocr_det": ocr_det, "ocr_rec": ocr_rec, "yolo": yolo, "yolo_nms": yolo_nms,
          "yolo_dynamic": yolo_dynamic, "magika": magika}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--models", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(MODELS))
        return 0
    if not args.out_dir:
        ap.error("OUT_DIR is required")
    names = [n for n in args.models.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown models: {', '.join(unknown)} (known: {', '.join(MODELS)})")
    root = args.out_dir
    os.makedirs(os.path.join(root, "bad"), exist_ok=True)
    import torch
    manifest = {"rtol": RTOL, "atol": ATOL, "seed": SEED,
                "generator": {"script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
                              "torch": torch.__version__, "onnx": onnx.__version__,
                              "onnxruntime": ort.__version__, "numpy": np.__version__},
                "families": []}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    chain_lines = []
    for idx, name in enumerate(names):
        rng = np.random.default_rng(SEED + list(MODELS).index(name))
        made = MODELS[name](rng)
        m, cases, chains = made[:3]
        onnx.checker.check_model(m, full_check=True)
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(m, os.path.join(d, "model.onnx"))
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        in_names = [i.name for i in sess.get_inputs()]
        out_names = [o.name for o in sess.get_outputs()]
        entry = {"name": name, "model": f"{name}/model.onnx", "opset": m.opset_import[0].version,
                 "params": int(sum(np.prod(t.dims) for t in m.graph.initializer)),
                 "ops": dict(op_histogram(m.graph).most_common()), "rtol": RTOL, "atol": ATOL, "cases": []}
        results = []
        for k, inputs in enumerate(cases):
            inputs = list(inputs)
            if k in chains:
                i, prev, out_name = chains[k]
                inputs[i] = results[prev][out_names.index(out_name)]
                chain_lines.append(f"{name} {k} {i} {prev} {out_name}")
            res = sess.run(None, dict(zip(in_names, inputs)))
            results.append(res)
            c = {"inputs": [], "outputs": []}
            for i, a in enumerate(inputs):
                f = f"{name}/case{k}_input_{i}.npy"
                np.save(os.path.join(root, f), a)
                c["inputs"].append({"name": in_names[i], "file": f, "shape": list(np.shape(a)), "dtype": str(a.dtype)})
            for j, r in enumerate(res):
                f = f"{name}/case{k}_output_{j}.npy"
                np.save(os.path.join(root, f), np.asarray(r))
                c["outputs"].append({"name": out_names[j], "file": f, "shape": list(r.shape), "dtype": str(r.dtype)})
            entry["cases"].append(c)
        if len(made) > 3:  # the exporter's module itself, as a check of the export
            np.testing.assert_allclose(results[1][0], made[3], rtol=1e-3, atol=1e-3)
        entry["inputs"], entry["outputs"] = entry["cases"][0]["inputs"], entry["cases"][0]["outputs"]
        manifest["families"].append(entry)
        print(f"{name:11s} opset {entry['opset']} {entry['params']:>8,d} params, {len(cases)} cases; ops: "
              + ", ".join(f"{op} {n}" for op, n in entry["ops"].items()))
    with open(os.path.join(root, "chains.txt"), "w") as f:
        f.write("".join(line + "\n" for line in chain_lines))
    bad = [b for b in bad_cases(root) if not b[0].startswith("../") or b[0].split("/")[1] in names]
    with open(os.path.join(root, "bad", "expect.txt"), "w") as ex:
        for k, case in enumerate(bad):
            if len(case) == 4:
                fname, m, fragment, inputs = case
                onnx.save(m, os.path.join(root, "bad", fname))
            else:
                fname, fragment, inputs = case
            files = []
            for i, a in enumerate(inputs):
                f = os.path.join(root, "bad", f"case{k}_input_{i}.npy")
                np.save(f, a)
                files.append(os.path.basename(f))
            ex.write(f"{fname}\t{fragment}\t{' '.join(files)}\n")
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(names)} models and {len(bad)} bad cases to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
