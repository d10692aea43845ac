#!/usr/bin/env python3
"""A stand-in for `gpugrid run --local MODEL INPUT... --output-dir DIR` that runs onnxruntime.

Used to check the model-family test harness itself (tests/families_test.sh, compare.py)
without the engine:  bash tests/families_test.sh tests/models/ort_gpugrid.sh "$PWD"
Inputs are positional .npy files (the model's inputs in order) or NAME=FILE.
"""
import os
import sys

import numpy as np
import onnxruntime as ort


def main(argv):
    if len(argv) < 2 or argv[0] != "run":
        print("ort_run.py: usage: run [--local] MODEL INPUT... --output-dir DIR", file=sys.stderr)
        return 2
    args = [a for a in argv[1:] if a != "--local"]
    out_dir, rest = None, []
    i = 0
    while i < len(args):
        if args[i] == "--output-dir":
            out_dir = args[i + 1]
            i += 2
            continue
        if args[i] in ("--device", "--threads"):
            i += 2
            continue
        rest.append(args[i])
        i += 1
    model, inputs = rest[0], rest[1:]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = {}
    for k, spec in enumerate(inputs):
        name, path = spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else (names[k], spec)
        feeds[name] = np.load(path)
    outs = sess.run(None, feeds)
    os.makedirs(out_dir or ".", exist_ok=True)
    for o, y in zip(sess.get_outputs(), outs):
        np.save(os.path.join(out_dir or ".", o.name + ".npy"), y)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
