#!/usr/bin/env python3
"""Latency of the recurrent and com.microsoft LLM operators and of convolutions off the common
paths (1x7, 7x1, 5x1, dilated, grouped), gpugrid versus onnxruntime.

Builds one-node models at sizes real models use (with the builders of
tests/models/make_op_cases.py), then times each with
  gpugrid bench MODEL INPUT... --device cpu --threads T --iterations N --json
and onnxruntime (intra_op_num_threads=T, sequential, default optimisations) on the same
inputs in this process, alternating the two --rounds times and keeping each one's best median.
It also reports CPU time per run (user + system; for gpugrid the difference between a run of
2N and one of N iterations, so loading cancels out), which a busy machine distorts less than
wall time. Prints a markdown table; --out FILE also writes it.

    .venv/bin/python bench/op_cases_bench.py [--threads 2] [--iterations 20] [--cases a,b]
"""
import argparse
import json
import os
import resource
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
import make_op_cases as mc  # noqa: E402


def cases():
    rng = np.random.default_rng(1)
    out = {}
    out["LSTM S64 B1 I128 H256"] = mc.rnn_case(rng, "LSTM", 4, S=64, N=1, I=128, H=256)
    out["LSTM S64 B8 I128 H256 bidir"] = mc.rnn_case(rng, "LSTM", 4, S=64, N=8, I=128, H=256, direction="bidirectional")
    out["GRU S64 B1 I128 H256"] = mc.rnn_case(rng, "GRU", 3, S=64, N=1, I=128, H=256)
    for M in (1, 32):
        N, K, block = 2048, 2048, 32
        B, sc, zp = mc.quantize_nbits(rng, N, K, block)
        s = mc.spec("MatMulNBits", [("A", mc.rnd(rng, 1, M, K), False), ("B", B, True), ("scales", sc, True),
                                    ("zero_points", zp, True)], [("Y", onnx.TensorProto.FLOAT)], domain=mc.MS,
                    K=K, N=N, bits=4, block_size=block)
        out[f"MatMulNBits M{M} K{K} N{N} int4"] = s
    out["GQA decode P511 N16 Nkv4 H64 rotary"] = mc.gqa_case(rng, B=1, S=1, P=511, N=16, Nkv=4, H=64, rotary=True)
    out["GQA prompt S128 N16 Nkv4 H64"] = mc.gqa_case(rng, B=1, S=128, P=0, N=16, Nkv=4, H=64)
    dims = dict(V=2048, D=512, N=8, Nkv=2, H=64, F=1536, L=4)
    out["int4 decoder D512 L4: step, 127 cached"] = mc.decoder(rng, S=1, P=127, **dims)
    out["int4 decoder D512 L4: prompt of 64"] = mc.decoder(rng, S=64, P=0, **dims)
    # Convolutions off the common paths (not 3x3 stride 1, not 1x1, not depthwise).
    def conv(C, M, H, W, kh, kw, pads, group=1, dil=1):
        return mc.spec("Conv", [("X", mc.rnd(rng, 1, C, H, W), False),
                                ("W", mc.rnd(rng, M, C // group, kh, kw, scale=0.1), True),
                                ("B", mc.rnd(rng, M), True)], [("Y", onnx.TensorProto.FLOAT)],
                       kernel_shape=[kh, kw], pads=pads, group=group, dilations=[dil, dil])
    out["Conv 64->64 1x7 56x56"] = conv(64, 64, 56, 56, 1, 7, [0, 3, 0, 3])
    out["Conv 64->64 7x1 56x56"] = conv(64, 64, 56, 56, 7, 1, [3, 0, 3, 0])
    out["Conv 64->64 3x3 dilation 2 56x56"] = conv(64, 64, 56, 56, 3, 3, [2, 2, 2, 2], dil=2)
    out["Conv 64->64 3x3 4 groups 56x56"] = conv(64, 64, 56, 56, 3, 3, [1, 1, 1, 1], group=4)
    out["Conv 32->32 5x1 512x256"] = conv(32, 32, 512, 256, 5, 1, [2, 0, 2, 0])
    out["SkipSimplifiedLN 64x2048"] = mc.spec(
        "SkipSimplifiedLayerNormalization", [("input", mc.rnd(rng, 1, 64, 2048), False),
                                             ("skip", mc.rnd(rng, 1, 64, 2048), False), ("gamma", mc.rnd(rng, 2048), True)],
        [("output", onnx.TensorProto.FLOAT)], domain=mc.MS)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpugrid", default=os.path.join(ROOT, "build", "gpugrid"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names")
    ap.add_argument("--out")
    args = ap.parse_args()
    import onnxruntime as ort
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, s in cases().items():
            if args.cases and not any(c in name for c in args.cases.split(",")):
                continue
            path = os.path.join(tmp, "model.onnx")
            onnx.save(mc.build(s), path)
            feeds = {n: a for n, a, c in s.inputs if a is not None and not c}
            files = []
            for i, (n, a) in enumerate(feeds.items()):
                files.append(os.path.join(tmp, f"in{i}.npy"))
                np.save(files[-1], a)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            names = [n for n, _ in s.outputs if n]
            gg, ox, gg_cpu, ox_cpu = [], [], [], []

            def gpugrid_bench(iterations):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run([args.gpugrid, "bench", path, *files, "--device", "cpu", "--threads",
                                    str(args.threads), "--iterations", str(iterations), "--json"],
                                   capture_output=True, text=True, timeout=600)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if r.returncode != 0:
                    raise SystemExit(f"{name}: gpugrid bench failed: {r.stderr.strip()}")
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                return json.loads(r.stdout)["median_ms"], cpu

            for _ in range(args.rounds):
                med, cpu1 = gpugrid_bench(args.iterations)
                _, cpu2 = gpugrid_bench(2 * args.iterations)
                gg.append(med)
                gg_cpu.append(max(0.0, cpu2 - cpu1) * 1e3 / args.iterations)
                for _ in range(3):
                    sess.run(names, feeds)
                times = []
                c0 = time.process_time()
                for _ in range(args.iterations):
                    t0 = time.perf_counter()
                    sess.run(names, feeds)
                    times.append((time.perf_counter() - t0) * 1e3)
                ox_cpu.append((time.process_time() - c0) * 1e3 / args.iterations)
                ox.append(float(np.median(times)))
            rows.append((name, min(gg), min(ox), min(gg_cpu), min(ox_cpu)))
            print(f"{name}: gpugrid {min(gg):.3f} ms ({min(gg_cpu):.3f} CPU), onnxruntime {min(ox):.3f} ms "
                  f"({min(ox_cpu):.3f} CPU)", file=sys.stderr, flush=True)
    lines = [f"# Single operators, gpugrid vs onnxruntime {ort.__version__} (CPU)", "",
             f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
             f"{args.threads} threads, median of {args.iterations} runs, best of {args.rounds} alternating rounds.", "",
             "| op case | gpugrid ms | onnxruntime ms | ratio | gpugrid CPU ms/run | onnxruntime CPU ms/run | CPU ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, g, o, gc, oc in rows:
        lines.append(f"| {name} | {g:.3f} | {o:.3f} | {g / o:.2f} | {gc:.3f} | {oc:.3f} | {gc / max(oc, 1e-9):.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
