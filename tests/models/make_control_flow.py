#!/usr/bin/env python3
"""Writes small models with control flow (If, Loop, Scan) and sequence ops, their inputs and
onnxruntime's outputs, for tests/control_flow_test.sh.

    make_control_flow.py OUT_DIR

OUT_DIR/manifest.json has the layout of make_families.py's (compare.py --list reads it):
one "family" per model, each with one or more cases. OUT_DIR/bad/*.onnx are models the
engine must refuse with exit 2 and a one-line error; OUT_DIR/bad/expect.txt has one line per
model: FILE<TAB>a fragment of the expected message<TAB>input files (may be empty).
Needs numpy, onnx and onnxruntime. Everything is generated; nothing is downloaded.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper

OPSET = 17
rng = np.random.default_rng(7)


def vi(name, elem=TP.FLOAT, shape=None):
    return h.make_tensor_value_info(name, elem, shape)


def seq_vi(name, elem=TP.FLOAT):
    return h.make_value_info(name, h.make_sequence_type_proto(h.make_tensor_type_proto(elem, None)))


def const(name, arr):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr), name + "_v"))


def model(nodes, inputs, outputs, inits=(), name="g"):
    g = h.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


def graph(nodes, inputs, outputs, name, inits=()):
    return h.make_graph(nodes, name, inputs, outputs, initializer=list(inits))


MODELS = {}


def case(fn):
    MODELS[fn.__name__] = fn
    return fn


@case
def if_nested():
    # y = if sum(x) > 0: (if b: x * w + t else x - w) else x * 3; w is a main-graph weight read
    # two levels down, t an input read two levels down.
    w = numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "w")
    inner_then = graph([h.make_node("Mul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "t"], ["r1"])],
                       [], [vi("r1")], "inner_then")
    inner_else = graph([h.make_node("Sub", ["x", "w"], ["r2"])], [], [vi("r2")], "inner_else")
    outer_then = graph([h.make_node("If", ["b"], ["r3"], then_branch=inner_then, else_branch=inner_else),
                        h.make_node("Relu", ["r3"], ["r4"])], [], [vi("r4")], "outer_then")
    outer_else = graph([const("three", np.float32(3)), h.make_node("Mul", ["x", "three"], ["r5"])],
                       [], [vi("r5")], "outer_else")
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0), const("zero", np.float32(0)),
             h.make_node("Greater", ["s", "zero"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=outer_then, else_branch=outer_else)]
    m = model(nodes, [vi("x", shape=[2, 3]), vi("b", TP.BOOL, []), vi("t", shape=[2, 3])], [vi("y")], [w])
    pos = np.abs(rng.standard_normal((2, 3))).astype(np.float32)
    t = rng.standard_normal((2, 3)).astype(np.float32)
    return m, [[pos, np.array(True), t], [pos, np.array(False), t], [-pos, np.array(True), t]]


@case
def loop_scan_early_exit():
    # for i < M while sum(acc) < limit: acc += x * i; scan out acc and i*i.
    body = graph([
        h.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT),
        h.make_node("Mul", ["x", "fi"], ["xi"]),
        h.make_node("Add", ["acc", "xi"], ["acc_out"]),
        h.make_node("ReduceSum", ["acc_out"], ["s"], keepdims=0),
        h.make_node("Less", ["s", "limit"], ["cond_out"]),
        h.make_node("Mul", ["i", "i"], ["sq"]),
        h.make_node("Identity", ["acc_out"], ["acc_scan"]),
    ], [vi("i", TP.INT64, []), vi("cond", TP.BOOL, []), vi("acc", shape=[3])],
        [vi("cond_out", TP.BOOL, []), vi("acc_out", shape=[3]), vi("acc_scan", shape=[3]), vi("sq", TP.INT64, [])],
        "body")
    nodes = [const("t", np.array(True)),
             h.make_node("Loop", ["M", "t", "acc0"], ["acc_final", "accs", "squares"], body=body)]
    m = model(nodes, [vi("M", TP.INT64, []), vi("acc0", shape=[3]), vi("x", shape=[3]), vi("limit", shape=[])],
              [vi("acc_final"), vi("accs"), vi("squares", TP.INT64)])
    x = np.array([1, 2, 3], np.float32)
    a0 = np.array([0.5, -1, 2], np.float32)
    return m, [[np.array(5, np.int64), a0, x, np.array(1000, np.float32)],
               [np.array(50, np.int64), a0, x, np.array(40, np.float32)]]


@case
def loop_dynamic_nested():
    # The trip count is the length of x (Shape -> Gather); an inner Loop per outer iteration,
    # with no cond input, reads the outer body's iteration number and a main-graph value.
    inner = graph([
        h.make_node("Cast", ["j"], ["fj"], to=TP.FLOAT),
        h.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT),
        h.make_node("Mul", ["fi", "fj"], ["p"]),
        h.make_node("Add", ["p", "scale"], ["q"]),
        h.make_node("Add", ["v", "q"], ["v_out"]),
        h.make_node("Identity", ["ci"], ["ci_out"]),
    ], [vi("j", TP.INT64, []), vi("ci", TP.BOOL, []), vi("v", shape=None)],
        [vi("ci_out", TP.BOOL, []), vi("v_out")], "inner")
    outer = graph([
        h.make_node("Gather", ["x", "i"], ["xi"], axis=0),
        h.make_node("Loop", ["three", "", "xi"], ["vv"], body=inner),
        h.make_node("Add", ["acc", "vv"], ["acc_out"]),
        h.make_node("Identity", ["c"], ["c_out"]),
    ], [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("acc")], [vi("c_out", TP.BOOL, []), vi("acc_out"), vi("vv")],
        "outer")
    nodes = [h.make_node("Shape", ["x"], ["shp"]), const("z", np.array(0, np.int64)),
             h.make_node("Gather", ["shp", "z"], ["n"], axis=0), const("three", np.array(3, np.int64)),
             const("acc0", np.zeros(4, np.float32)),
             h.make_node("Loop", ["n", "", "acc0"], ["acc", "rows"], body=outer)]
    m = model(nodes, [vi("x", shape=["n", 4]), vi("scale", shape=[])], [vi("acc"), vi("rows")])
    return m, [[rng.standard_normal((5, 4)).astype(np.float32), np.array(0.25, np.float32)],
               [rng.standard_normal((2, 4)).astype(np.float32), np.array(-1, np.float32)]]


@case
def scan_axes_directions():
    # A running state, two scan inputs (axis 0 forwards, axis 1 backwards), two scan outputs
    # (axis 0 reversed, axis 1 forwards); the body reads a main-graph input.
    body = graph([
        h.make_node("Add", ["s", "a"], ["s1"]),
        h.make_node("Mul", ["s1", "b"], ["s2"]),
        h.make_node("Add", ["s2", "bias"], ["s_out"]),
        h.make_node("Identity", ["s_out"], ["o1"]),
        h.make_node("Sub", ["a", "b"], ["o2"]),
    ], [vi("s", shape=[3]), vi("a", shape=[3]), vi("b", shape=[3])],
        [vi("s_out", shape=[3]), vi("o1", shape=[3]), vi("o2", shape=[3])], "body")
    nodes = [h.make_node("Scan", ["s0", "A", "B"], ["s_final", "O1", "O2"], body=body, num_scan_inputs=2,
                         scan_input_axes=[0, 1], scan_input_directions=[0, 1],
                         scan_output_axes=[0, -1], scan_output_directions=[1, 0])]
    m = model(nodes, [vi("s0", shape=[3]), vi("A", shape=["n", 3]), vi("B", shape=[3, "n"]), vi("bias", shape=[3])],
              [vi("s_final"), vi("O1"), vi("O2")])
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    return m, [[f(3), f(4, 3), f(3, 4), f(3)], [f(3), f(1, 3), f(3, 1), f(3)]]


@case
def scan_in_if():
    # A Scan (cumulative sum) inside an If branch; the other branch is a plain op.
    body = graph([h.make_node("Add", ["s", "a"], ["s_out"]), h.make_node("Identity", ["s_out"], ["o"])],
                 [vi("s", shape=[2]), vi("a", shape=[2])], [vi("s_out", shape=[2]), vi("o", shape=[2])], "body")
    then_b = graph([h.make_node("Scan", ["z", "X"], ["last", "cum"], body=body, num_scan_inputs=1)], [],
                   [vi("cum")], "then")
    else_b = graph([h.make_node("Neg", ["X"], ["neg"])], [], [vi("neg")], "else")
    nodes = [const("z", np.zeros(2, np.float32)),
             h.make_node("If", ["b"], ["y"], then_branch=then_b, else_branch=else_b)]
    m = model(nodes, [vi("b", TP.BOOL, []), vi("X", shape=[5, 2])], [vi("y")])
    x = rng.standard_normal((5, 2)).astype(np.float32)
    return m, [[np.array(True), x], [np.array(False), x]]


@case
def sequences():
    # SplitToSequence, SequenceInsert/Erase/At/Length, SequenceMap (body reads a main-graph
    # input), ConcatFromSequence with and without a new axis, SequenceConstruct.
    map_body = graph([h.make_node("Mul", ["e", "k"], ["e2"]), h.make_node("ReduceSum", ["e2"], ["r"], keepdims=1)],
                     [vi("e")], [vi("r")], "map_body")
    nodes = [
        h.make_node("SplitToSequence", ["x"], ["parts"], axis=1, keepdims=0),
        h.make_node("SequenceInsert", ["parts", "extra", "one"], ["p2"]),
        h.make_node("SequenceErase", ["p2", "minus_one"], ["p3"]),
        h.make_node("SequenceAt", ["p3", "minus_one"], ["last"]),
        h.make_node("SequenceLength", ["p3"], ["n"]),
        h.make_node("ConcatFromSequence", ["p3"], ["stacked"], axis=1, new_axis=1),
        h.make_node("SequenceMap", ["p3"], ["mapped"], body=map_body),
        h.make_node("ConcatFromSequence", ["mapped"], ["sums"], axis=0),
        h.make_node("SequenceConstruct", ["x", "x"], ["pair"]),
        h.make_node("ConcatFromSequence", ["pair"], ["xx"], axis=-1),
        h.make_node("SplitToSequence", ["x", "two"], ["chunks"], axis=1),
        h.make_node("SequenceAt", ["chunks", "one"], ["chunk1"]),
        h.make_node("SplitToSequence", ["x", "sizes"], ["uneven"], axis=0),
        h.make_node("SequenceAt", ["uneven", "zero"], ["first_rows"]),
    ]
    inits = [numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(-1, np.int64), "minus_one"),
             numpy_helper.from_array(np.array(2, np.int64), "two"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "sizes")]
    m = model(nodes, [vi("x", shape=[3, 5]), vi("extra", shape=[3]), vi("k", shape=[3])],
              [vi("last"), vi("n", TP.INT64), vi("stacked"), vi("sums"), vi("xx"), vi("chunk1"), vi("first_rows")], inits)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return m, [[f(3, 5), f(3), f(3)]]


@case
def loop_sequence():
    # A sequence carried through a Loop (starts as SequenceEmpty), then concatenated.
    body = graph([
        h.make_node("Cast", ["i"], ["fi"], to=TP.FLOAT),
        h.make_node("Mul", ["x", "fi"], ["xi"]),
        h.make_node("SequenceInsert", ["seq", "xi"], ["seq_out"]),
        h.make_node("Identity", ["c"], ["c_out"]),
    ], [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), seq_vi("seq")], [vi("c_out", TP.BOOL, []), seq_vi("seq_out")],
        "body")
    nodes = [h.make_node("SequenceEmpty", [], ["empty"], dtype=TP.FLOAT),
             h.make_node("Loop", ["M", "", "empty"], ["seq"], body=body),
             h.make_node("ConcatFromSequence", ["seq"], ["y"], axis=0)]
    m = model(nodes, [vi("M", TP.INT64, []), vi("x", shape=[2])], [vi("y")])
    return m, [[np.array(4, np.int64), np.array([1.5, -2], np.float32)]]


# ---- models the engine must refuse (exit 2, one line)

def bad_models():
    out = []
    body = graph([h.make_node("Identity", ["c"], ["c_out"]), h.make_node("Add", ["v", "v"], ["v_out"])],
                 [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("v")], [vi("c_out", TP.BOOL, []), vi("v_out")], "body")
    loop = model([h.make_node("Loop", ["M", "", "v0"], ["v"], body=body)], [vi("M", TP.INT64, []), vi("v0", shape=[2])],
                 [vi("v")])
    out.append(("loop_negative.onnx", loop, "is negative", [np.array(-3, np.int64), np.ones(2, np.float32)]))
    out.append(("loop_huge.onnx", loop, "limit", [np.array(2**62, np.int64), np.ones(2, np.float32)]))
    undefined = graph([h.make_node("Add", ["x", "nowhere"], ["r"])], [], [vi("r")], "then")
    m = model([h.make_node("If", ["b"], ["y"], then_branch=undefined, else_branch=undefined)],
              [vi("b", TP.BOOL, []), vi("x", shape=[2])], [vi("y")])
    out.append(("undefined_name.onnx", m, "nowhere", []))
    # Ifs nested 17 deep (the limit is 16).
    leaf = graph([h.make_node("Identity", ["x"], ["r"])], [], [vi("r")], "leaf")
    g = leaf
    for _ in range(17):
        g = graph([h.make_node("If", ["b"], ["r"], then_branch=g, else_branch=leaf)], [], [vi("r")], "level")
    m = model(list(g.node), [vi("b", TP.BOOL, []), vi("x", shape=[2])], [vi("r")])
    out.append(("too_deep.onnx", m, "nested", []))
    # An op no backend has, two Ifs down: the error names the path of nodes to it.
    leaf = graph([h.make_node("FooBar", ["x"], ["r"], name="foo")], [], [vi("r")], "leaf")
    neg = graph([h.make_node("Neg", ["x"], ["r2"])], [], [vi("r2")], "neg")
    mid = graph([h.make_node("If", ["b"], ["r3"], name="inner_if", then_branch=leaf, else_branch=neg)], [], [vi("r3")], "mid")
    m = model([h.make_node("If", ["b"], ["y"], name="outer", then_branch=mid, else_branch=neg)],
              [vi("b", TP.BOOL, []), vi("x", shape=[2])], [vi("y")])
    out.append(("unsupported_in_branch.onnx", m,
                "If 'outer' then_branch: If 'inner_if' then_branch: unsupported op FooBar", []))
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    os.makedirs(os.path.join(root, "bad"), exist_ok=True)
    manifest = {"opset": OPSET, "rtol": 1e-4, "atol": 1e-5, "families": []}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for name, fn in MODELS.items():
        m, cases = fn()

        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(m, os.path.join(d, "model.onnx"))
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        in_names = [i.name for i in sess.get_inputs()]
        out_names = [o.name for o in sess.get_outputs()]
        entry = {"name": name, "model": f"{name}/model.onnx", "cases": []}
        for k, inputs in enumerate(cases):
            res = sess.run(None, dict(zip(in_names, inputs)))
            c = {"inputs": [], "outputs": []}
            for i, a in enumerate(inputs):
                f = f"{name}/case{k}_input_{i}.npy"
                np.save(os.path.join(root, f), a)
                c["inputs"].append({"name": in_names[i], "file": f})
            for j, r in enumerate(res):
                f = f"{name}/case{k}_output_{j}.npy"
                np.save(os.path.join(root, f), np.asarray(r))
                c["outputs"].append({"name": out_names[j], "file": f})
            entry["cases"].append(c)
        manifest["families"].append(entry)
    with open(os.path.join(root, "bad", "expect.txt"), "w") as ex:
        for fname, m, fragment, inputs in bad_models():
            onnx.save(m, os.path.join(root, "bad", fname))
            files = []
            for i, a in enumerate(inputs):
                f = os.path.join(root, "bad", f"{fname[:-5]}_input_{i}.npy")
                np.save(f, a)
                files.append(f)
            ex.write(f"{fname}\t{fragment}\t{' '.join(files)}\n")
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(MODELS)} models and {len(bad_models())} bad ones to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
