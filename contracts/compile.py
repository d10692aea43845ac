#!/usr/bin/env python3
"""Compiles contracts/*.vy with the pinned vyper and writes (or, with --check, compares) the
committed build output contracts/NAME.json: {"vyper": VERSION, "abi": [...], "bytecode": "0x..",
"bytecode_runtime": "0x.."}. --check exits 1 naming the contract whose committed output no
longer matches its source."""
import argparse
import json
import pathlib
import sys

import vyper
from vyper.compiler import compile_code

HERE = pathlib.Path(__file__).resolve().parent


def build(source_path):
    src = source_path.read_text()
    out = compile_code(src, output_formats=["abi", "bytecode", "bytecode_runtime"],
                       contract_path=str(source_path.name))
    return {"vyper": vyper.__version__, "abi": out["abi"], "bytecode": out["bytecode"],
            "bytecode_runtime": out["bytecode_runtime"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="compare with the committed output")
    args = ap.parse_args()
    bad = 0
    for src in sorted(HERE.glob("*.vy")):
        want = build(src)
        target = src.with_suffix(".json")
        text = json.dumps(want, indent=1, sort_keys=True) + "\n"
        if args.check:
            have = target.read_text() if target.exists() else ""
            if have != text:
                print(f"compile.py: {target.name} does not match {src.name} "
                      f"(run contracts/compile.py and commit the result)", file=sys.stderr)
                bad = 1
            else:
                print(f"compile.py: {target.name} matches {src.name}")
        else:
            target.write_text(text)
            print(f"compile.py: wrote {target.name}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
