#!/usr/bin/env python3
"""Regenerates the ONNX backend node test suite (onnx's own test cases) into a folder.

The onnx package's generator still uses NumPy aliases that newer NumPy removed; they are put
back before onnx is imported. Usage: generate.py OUT_DIR  (writes OUT_DIR/node/test_*)."""
import sys

import numpy as np

for name, value in (("float", float), ("int", int), ("bool", bool), ("object", object)):
    if name not in np.__dict__:
        setattr(np, name, value)

import onnx  # noqa: E402
from onnx.backend.test.cmd_tools import main  # noqa: E402

print(f"onnx {onnx.__version__}", file=sys.stderr)
sys.argv = ["cmd_tools", "generate-data", "-o", sys.argv[1]]
main()
