#!/usr/bin/env python3
"""Compares tensors written by gpugrid with reference tensors (numpy .npy files).

    compare.py REF.npy ACTUAL.npy [--rtol R] [--atol A]
        one pair; passes when shapes and dtypes match and |actual - ref| <= atol + rtol * |ref|
        everywhere (NaN only where the reference has NaN).
    compare.py --manifest MANIFEST.json --family F [--case K] --actual-dir DIR
        every output of case K (default 0) of family F, with the family's tolerance; the actual
        file of output NAME is DIR/NAME.npy (what `gpugrid run --output-dir DIR` writes).
    compare.py --list MANIFEST.json
        one line per case: FAMILY CASE MODEL INPUT_FILE... (paths absolute), for shell loops.

Prints one line per tensor (OK/MISMATCH with the worst errors) and exits 0 when all match,
1 on any mismatch, 2 on bad usage or an unreadable file. Needs only numpy.
"""
import argparse
import json
import os
import sys

import numpy as np


def check(ref, act, rtol, atol):
    """Returns (ok, message)."""
    if ref.shape != act.shape:
        return False, f"shape {list(act.shape)}, expected {list(ref.shape)}"
    if ref.dtype != act.dtype:
        return False, f"dtype {act.dtype}, expected {ref.dtype}"
    if ref.size == 0:
        return True, "empty"
    if ref.dtype.kind in "biu":
        bad = ref != act
        n = int(bad.sum())
        if n:
            i = np.unravel_index(int(np.argmax(bad)), ref.shape)
            return False, f"{n}/{ref.size} elements differ, first at {list(i)}: {act[i]} vs {ref[i]}"
        return True, "exact"
    r = ref.astype(np.float64)
    a = act.astype(np.float64)
    ref_nan, act_nan = np.isnan(r), np.isnan(a)
    if (ref_nan != act_nan).any():
        n = int((ref_nan != act_nan).sum())
        return False, f"{n} NaN positions differ (actual has {int(act_nan.sum())} NaN, reference {int(ref_nan.sum())})"
    r = np.where(ref_nan, 0.0, r)
    a = np.where(act_nan, 0.0, a)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - r)
        diff = np.where(np.isinf(r) & (a == r), 0.0, diff)
    bound = atol + rtol * np.abs(r)
    bad = ~(diff <= bound)
    max_abs = float(diff.max())
    rel = diff / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    max_rel = float(np.where(np.abs(r) > atol, rel, 0.0).max())
    stats = f"max abs err {max_abs:.3g}, max rel err {max_rel:.3g} (where |ref| > atol), |ref| mean {float(np.abs(r).mean()):.3g}"
    if bad.any():
        n = int(bad.sum())
        i = np.unravel_index(int(np.argmax(diff - bound)), ref.shape)
        return False, f"{n}/{ref.size} elements out of tolerance; worst at {list(i)}: {act[i]} vs {ref[i]}; {stats}"
    return True, stats


def load(path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"compare.py: cannot read {path}: {e}") from None


def find_family(manifest, name):
    for f in manifest["families"]:
        if f["name"] == name:
            return f
    raise SystemExit(f"compare.py: no family {name!r} in the manifest")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="REF.npy ACTUAL.npy")
    ap.add_argument("--rtol", type=float, default=None)
    ap.add_argument("--atol", type=float, default=None)
    ap.add_argument("--manifest")
    ap.add_argument("--family")
    ap.add_argument("--case", type=int, default=0)
    ap.add_argument("--actual-dir")
    ap.add_argument("--list", metavar="MANIFEST")
    args = ap.parse_args()

    if args.list:
        base = os.path.dirname(os.path.abspath(args.list))
        with open(args.list) as f:
            manifest = json.load(f)
        for fam in manifest["families"]:
            for k, case in enumerate(fam["cases"]):
                files = [os.path.join(base, i["file"]) for i in case["inputs"]]
                print(fam["name"], k, os.path.join(base, fam["model"]), *files)
        return 0

    pairs = []  # (label, ref path, actual path, rtol, atol)
    if args.manifest:
        if not args.family or not args.actual_dir or args.files:
            ap.error("--manifest needs --family and --actual-dir and no positional files")
        base = os.path.dirname(os.path.abspath(args.manifest))
        with open(args.manifest) as f:
            manifest = json.load(f)
        fam = find_family(manifest, args.family)
        if not 0 <= args.case < len(fam["cases"]):
            ap.error(f"family {args.family} has {len(fam['cases'])} cases")
        rtol = args.rtol if args.rtol is not None else fam.get("rtol", manifest.get("rtol", 1e-3))
        atol = args.atol if args.atol is not None else fam.get("atol", manifest.get("atol", 1e-4))
        for o in fam["cases"][args.case]["outputs"]:
            pairs.append((o["name"], os.path.join(base, o["file"]), os.path.join(args.actual_dir, o["name"] + ".npy"), rtol, atol))
    else:
        if len(args.files) != 2:
            ap.error("give REF.npy ACTUAL.npy, or --manifest/--family/--actual-dir, or --list")
        rtol = 1e-3 if args.rtol is None else args.rtol
        atol = 1e-4 if args.atol is None else args.atol
        pairs.append((os.path.basename(args.files[1]), args.files[0], args.files[1], rtol, atol))

    failed = 0
    for label, ref_path, act_path, rtol, atol in pairs:
        if not os.path.exists(act_path):
            print(f"  MISSING  {label}: {act_path} was not written")
            failed += 1
            continue
        ok, msg = check(load(ref_path), load(act_path), rtol, atol)
        print(f"  {'OK      ' if ok else 'MISMATCH'} {label}: {msg}")
        failed += 0 if ok else 1
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            sys.exit(2)
        raise
