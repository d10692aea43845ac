#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/ (needs numpy and onnx).

The files are committed; run this again only to change them:
    .venv/bin/python tests/fuzz/make_corpus.py
"""
import io
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

here = os.path.dirname(os.path.abspath(__file__))


def out(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(a, version=None):
    b = io.BytesIO()
    if version:
        np.lib.format.write_array(b, a, version=version)
    else:
        np.save(b, a)
    return b.getvalue()


# ---- fuzz_npy
out("fuzz_npy", "f4_2x3.npy", npy(np.arange(6, dtype="<f4").reshape(2, 3)))
out("fuzz_npy", "i4_be.npy", npy(np.arange(6, dtype=">i4").reshape(2, 3)))
out("fuzz_npy", "f2_fortran_3d.npy", npy(np.asfortranarray(np.arange(24, dtype="<f2").reshape(2, 3, 4))))
out("fuzz_npy", "f8_scalar.npy", npy(np.float64(2.5)))
out("fuzz_npy", "b1.npy", npy(np.array([True, False, True])))
out("fuzz_npy", "i2_empty.npy", npy(np.zeros((0, 3), dtype=np.int16)))
out("fuzz_npy", "u2_v2.npy", npy(np.arange(3, dtype="<u2"), version=(2, 0)))
out("fuzz_npy", "u8_v3.npy", npy(np.arange(2, dtype=">u8"), version=(3, 0)))
out("fuzz_npy", "i1_u1.npy", npy(np.array([-1, 2], dtype="i1")))
out("fuzz_npy", "object.npy", npy(np.array([1, "a"], dtype=object))[:128] + b"\x80\x04")

# ---- fuzz_tensor_proto
def pb(t):
    return t.SerializeToString()

out("fuzz_tensor_proto", "f32_raw.pb", pb(numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "x")))
out("fuzz_tensor_proto", "bool_raw.pb", pb(numpy_helper.from_array(np.array([True, False]), "b")))
out("fuzz_tensor_proto", "i64_scalar.pb", pb(numpy_helper.from_array(np.int64(-7), "s")))
out("fuzz_tensor_proto", "f32_typed.pb", pb(helper.make_tensor("f", TensorProto.FLOAT, [2], [1.5, -2.0])))
out("fuzz_tensor_proto", "f64_typed.pb", pb(helper.make_tensor("d", TensorProto.DOUBLE, [1], [3.25])))
out("fuzz_tensor_proto", "i8_typed.pb", pb(helper.make_tensor("c", TensorProto.INT8, [3], [-3, 0, 100])))
out("fuzz_tensor_proto", "f16_typed.pb", pb(helper.make_tensor("h", TensorProto.FLOAT16, [2], np.array([1.5, -2], dtype=np.float16))))
out("fuzz_tensor_proto", "i64_typed.pb", pb(helper.make_tensor("l", TensorProto.INT64, [2, 1], [1, -(2**40)])))
out("fuzz_tensor_proto", "u64_typed.pb", pb(helper.make_tensor("u", TensorProto.UINT64, [2], [1, 2**63])))
out("fuzz_tensor_proto", "u32_typed.pb", pb(helper.make_tensor("v", TensorProto.UINT32, [1], [7])))
out("fuzz_tensor_proto", "empty.pb", pb(numpy_helper.from_array(np.zeros((0, 4), dtype=np.uint16), "e")))
ext = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
ext.ClearField("float_data")
ext.data_location = TensorProto.EXTERNAL
ext.external_data.add(key="location", value="weights.bin")
out("fuzz_tensor_proto", "external.pb", pb(ext))

# ---- fuzz_model_loader
def model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m.SerializeToString()

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
out("fuzz_model_loader", "add.onnx", model([helper.make_node("Add", ["x", "x"], ["y"])], [X], [Y]))
W = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
B = helper.make_tensor("b", TensorProto.FLOAT, [4], [0.5, 0, 0, -1])
out("fuzz_model_loader", "gemm_relu.onnx", model(
    [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
     helper.make_node("Relu", ["a"], ["y"])], [X], [Y], [W, B]))
S = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
out("fuzz_model_loader", "reshape_const.onnx", model(
    [helper.make_node("Constant", [], ["s"], value=helper.make_tensor("sv", TensorProto.INT64, [2], [-1, 2])),
     helper.make_node("Reshape", ["x", "s"], ["y"])], [X], [S]))
out("fuzz_model_loader", "softmax_opset11.onnx", model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [X], [Y], opset=11))

# Recurrent nets and com.microsoft operators, including a MatMulNBits whose blocks do not cover
# K (its kernel rejects it at run time; the seed gives the fuzzer the shape to mutate).
def model_ms(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m.SerializeToString()

XS = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1, 4])
YH = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2])
out("fuzz_model_loader", "lstm.onnx", model_ms(
    [helper.make_node("LSTM", ["x", "w", "r"], ["", "y"], hidden_size=2, direction="forward")], [XS], [YH],
    [numpy_helper.from_array(np.full((1, 8, 4), 0.1, np.float32), "w"),
     numpy_helper.from_array(np.full((1, 8, 2), 0.1, np.float32), "r")]))
XA = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
YN = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
out("fuzz_model_loader", "matmul_nbits_bad_blocks.onnx", model_ms(
    [helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=64, N=8, bits=4,
                      block_size=32)], [XA], [YN],
    [numpy_helper.from_array(np.zeros((8, 3, 16), np.uint8), "b"),
     numpy_helper.from_array(np.ones(24, np.float32), "s")]))
# Control flow: nested If reading outer-scope values, a Loop with a negative trip count, a Loop
# with a huge one, a subgraph reading a name nothing defines, Ifs nested past the limit, a Scan.
B1 = helper.make_tensor_value_info("b", TensorProto.BOOL, [])
inner = helper.make_graph([helper.make_node("Add", ["x", "x"], ["r1"])], "t", [], [helper.make_tensor_value_info("r1", TensorProto.FLOAT, None)])
inner_else = helper.make_graph([helper.make_node("Neg", ["x"], ["r2"])], "e", [], [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)])
outer = helper.make_graph([helper.make_node("If", ["b"], ["r3"], then_branch=inner, else_branch=inner_else)], "o", [],
                          [helper.make_tensor_value_info("r3", TensorProto.FLOAT, None)])
out("fuzz_model_loader", "if_nested.onnx", model(
    [helper.make_node("If", ["b"], ["y"], then_branch=outer, else_branch=inner_else)], [B1, X], [Y]))
body = helper.make_graph(
    [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["v", "x"], ["v_out"])], "body",
    [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
     helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
    [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
for name, trips in (("loop_negative.onnx", -3), ("loop_huge.onnx", 2**62)):
    out("fuzz_model_loader", name, model(
        [helper.make_node("Constant", [], ["m"], value=helper.make_tensor("mv", TensorProto.INT64, [], [trips])),
         helper.make_node("Loop", ["m", "", "x"], ["y"], body=body)], [X], [Y]))
undefined = helper.make_graph([helper.make_node("Add", ["x", "nowhere"], ["r"])], "u", [],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
out("fuzz_model_loader", "subgraph_undefined_name.onnx", model(
    [helper.make_node("If", ["b"], ["y"], then_branch=undefined, else_branch=undefined)], [B1, X], [Y]))
leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["r"])], "leaf", [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
deep = leaf
for _ in range(18):
    deep = helper.make_graph([helper.make_node("If", ["b"], ["r"], then_branch=deep, else_branch=leaf)], "level", [],
                             [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
out("fuzz_model_loader", "if_too_deep.onnx", model(list(deep.node), [B1, X], [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)]))
scan_body = helper.make_graph(
    [helper.make_node("Add", ["s", "a"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["o"])], "sb",
    [helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])],
    [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])])
out("fuzz_model_loader", "scan.onnx", model(
    [helper.make_node("Constant", [], ["z"], value=helper.make_tensor("zv", TensorProto.FLOAT, [4], [0] * 4)),
     helper.make_node("Scan", ["z", "x"], ["last", "y"], body=scan_body, num_scan_inputs=1, scan_input_directions=[1])],
    [X], [Y]))
