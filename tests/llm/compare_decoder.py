#!/usr/bin/env python3
"""Runs a decoder model file through `gpugrid run --local` and onnxruntime on the same inputs
(a prefill of 6 tokens with an empty cache, then a decode step of 1 token after 9 cached) and
compares every output (logits and present.*): relative to the output's largest magnitude,
within --tol, with the same argmax per logits row.

Usage: compare_decoder.py GPUGRID MODEL.onnx [--tol 2e-3] [--threads 2]
Exit: 0 all match; 1 a mismatch or a failed run.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort


def feeds_for(model, seq, past, rng):
    feeds = {}
    for i in model.graph.input:
        t = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if i.name == "input_ids":
            feeds[i.name] = rng.integers(0, 200, size=(1, seq)).astype(np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((1, past + seq), np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(past, past + seq, dtype=np.int64)[None]
        elif i.name == "use_cache_branch":
            feeds[i.name] = np.array([past > 0])
        elif i.name.startswith("past_key_values"):
            dt = np.float16 if t.elem_type == onnx.TensorProto.FLOAT16 else np.float32
            feeds[i.name] = (rng.standard_normal((1, dims[1], past, dims[3])) * 0.5).astype(dt)
        else:
            raise SystemExit(f"compare_decoder: unexpected input {i.name}")
    return feeds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gpugrid")
    ap.add_argument("model")
    ap.add_argument("--tol", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    model = onnx.load(a.model, load_external_data=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(3)
    ok = True
    for label, seq, past in [("prefill 6", 6, 0), ("decode after 9", 1, 9)]:
        feeds = feeds_for(model, seq, past, rng)
        ref = dict(zip(names, sess.run(None, feeds)))
        with tempfile.TemporaryDirectory() as d:
            args = []
            for n, v in feeds.items():
                p = os.path.join(d, n + ".npy")
                np.save(p, v)
                args.append(f"{n}={p}")
            out = os.path.join(d, "out")
            r = subprocess.run([a.gpugrid, "run", "--local", a.model, *args, "--device", "cpu", "--threads",
                                str(a.threads), "--output-dir", out, "-q"], capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                print(f"FAIL {a.model} {label}: gpugrid exit {r.returncode}: {r.stderr.strip()}")
                return 1
            worst = 0.0
            for n in names:
                got = np.load(os.path.join(out, n + ".npy")).astype(np.float64)
                want = ref[n].astype(np.float64)
                if got.shape != want.shape:
                    print(f"FAIL {a.model} {label}: {n} has shape {got.shape}, onnxruntime {want.shape}")
                    return 1
                err = np.abs(got - want).max() / max(1e-6, np.abs(want).max())
                worst = max(worst, err)
                if err > a.tol or not np.isfinite(got).all():
                    print(f"FAIL {a.model} {label}: {n} differs by {err:.2e} of its largest value (tolerance {a.tol:.0e})")
                    ok = False
                if n == "logits" and not (got.reshape(-1, got.shape[-1]).argmax(-1) ==
                                          want.reshape(-1, want.shape[-1]).argmax(-1)).all():
                    print(f"FAIL {a.model} {label}: the argmax of the logits differs")
                    ok = False
            print(f"{'ok  ' if ok else 'FAIL'} {a.model} {label}: {len(names)} outputs, worst relative error {worst:.1e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
