"""Inputs for tests/reliability_test.sh that a misbehaving peer would make by hand.

  heavy OUT_DIR LAYERS [N]     OUT_DIR/heavy.onnx: LAYERS MatMuls of an N x N input with one
                               N x N weight (2 * N^3 * LAYERS FLOP; N defaults to 256), and
                               OUT_DIR/heavy_x.npy, its input. Prints the GFLOP.
  extdata MODEL OUT            OUT: MODEL with its first float initializer's bytes taken from
                               external data named like MODEL's file in a provider's model
                               cache ("<blake2b-256 hex>.onnx"): a model that tries to read
                               another client's model out of the cache.
  dup-ledger LEDGER N          appends N copies of LEDGER's last entry, each chained and hashed
                               as `gpugrid` writes entries (ledger/ledger.cc): a ledger that
                               counts one job N+1 times.
"""
import hashlib
import struct
import sys

import numpy as np


def heavy(out_dir, layers, n=256):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    nodes = []
    prev = "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, f"{out_dir}/heavy.onnx")
    np.save(f"{out_dir}/heavy_x.npy", rng.standard_normal((n, n)).astype(np.float32))
    print(f"{2 * n ** 3 * layers / 1e9:.3f}")


def extdata(model_path, out):
    import onnx

    data = open(model_path, "rb").read()
    victim = hashlib.blake2b(data, digest_size=32).hexdigest() + ".onnx"
    m = onnx.load_from_string(data)
    for init in m.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        count = int(np.prod(init.dims)) if len(init.dims) else 1
        init.ClearField("float_data")
        init.ClearField("raw_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", victim), ("offset", "0"), ("length", str(4 * count))):
            e = init.external_data.add()
            e.key, e.value = k, v
        break
    open(out, "wb").write(m.SerializeToString())


# A record: u32 entry length, the entry (magic, u64 index, 32-byte previous hash, receipt),
# then the entry's BLAKE2b-256.
def dup_ledger(path, n):
    raw = open(path, "rb").read()
    (length,) = struct.unpack_from("<I", raw, 0)
    rec = 4 + length + 32
    if len(raw) < rec or len(raw) % rec:
        sys.exit(f"{path}: not whole records of {rec} bytes")
    last = raw[-rec:]
    entry = last[4:4 + length]
    count = len(raw) // rec
    prev = last[4 + length:]
    out = b""
    for i in range(n):
        e = entry[:8] + struct.pack("<Q", count + i) + prev + entry[48:]
        h = hashlib.blake2b(e, digest_size=32).digest()
        out += struct.pack("<I", length) + e + h
        prev = h
    with open(path, "ab") as f:
        f.write(out)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "heavy" and len(sys.argv) in (4, 5):
        heavy(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) == 5 else 256)
    elif cmd == "extdata" and len(sys.argv) == 4:
        extdata(sys.argv[2], sys.argv[3])
    elif cmd == "dup-ledger" and len(sys.argv) == 4:
        dup_ledger(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
