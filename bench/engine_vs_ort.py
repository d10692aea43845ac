#!/usr/bin/env python3
"""Engine-versus-onnxruntime CPU benchmark on the benchmark-size model families.

For each family (default: resnet18, mobilenetv2, bert (BERT-base, seq 128), gpt2 (GPT-2
small, seq 64), mlp (1024-4096-4096-1000, batch 1)) it runs, on the same inputs, with the same
warm-up and iteration counts, one after the other:
  gpugrid bench MODEL INPUT... --device cpu --threads T --warmup W --iterations N --json
  onnxruntime (intra_op_num_threads=T, inter_op_num_threads=1, ORT_SEQUENTIAL, default graph
  optimisations) in a child Python process that imports only numpy and onnxruntime,
and reports median and p90 latency, the engine's own peak_bytes, and the peak resident set
size (ru_maxrss from wait4) of each child process. Unless --no-check, it also runs
`gpugrid run --local` once and compares its outputs with the onnxruntime reference outputs
(rtol 1e-3, atol 1e-4).

Writes a markdown report (machine, date, versions, table) to
bench/results/engine-cpu-<YYYY-MM-DD>.md (--out to change, --no-write to skip) and prints it.

With --small F,G,... it also runs those families at their test size (width 0.25 or so, 64x64
images, batch 2: sub-millisecond models, where fixed per-op costs dominate), generated into
--small-dir (default build/families-small).

The models come from tests/models/make_families.py --size bench; they are generated into
--models-dir (default build/families-bench) when missing (about 1.3 GB, a minute or two).
Run it with the project's test environment: .venv/bin/python bench/engine_vs_ort.py
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FAMILIES = ["resnet18", "mobilenetv2", "bert", "gpt2", "mlp"]
LABELS = {"resnet18": "ResNet-18 1x3x224x224", "mobilenetv2": "MobileNetV2 1x3x224x224",
          "bert": "BERT-base seq 128", "gpt2": "GPT-2 small seq 64", "mlp": "MLP 1024-4096-4096-1000",
          "mobilenetv3-small": "MobileNetV3-small 224", "squeezenet": "SqueezeNet 1.1 224",
          "shufflenet": "ShuffleNetV2 1.0x 224", "efficientnet": "EfficientNet-B0-style 224",
          "unet": "U-Net 1x3x256x256"}


# ---------------------------------------------------------------------------------------------
# The onnxruntime child: imports only numpy and onnxruntime, prints one JSON object.


def ort_worker(args):
    import numpy as np
    import onnxruntime as ort

    inputs = [np.load(p) for p in args.inputs]
    if args.baseline:  # the interpreter, numpy, onnxruntime and the inputs, without a session
        print(json.dumps({"baseline": True}))
        return 0
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), inputs)}
    for _ in range(max(1, args.warmup)):
        sess.run(None, feeds)
    times = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()

    def pct(p):  # linear interpolation, as gpugrid bench does
        idx = p * (len(times) - 1)
        lo = int(idx)
        hi = min(lo + 1, len(times) - 1)
        return times[lo] + (times[hi] - times[lo]) * (idx - lo)

    print(json.dumps({"median_ms": pct(0.5), "p90_ms": pct(0.9), "min_ms": times[0], "load_ms": load_ms,
                      "onnxruntime": ort.__version__}))
    return 0


# ---------------------------------------------------------------------------------------------
# The driver


# Peak RSS: on Linux a child's ru_maxrss starts from its parent's resident size at fork (and a
# vfork'd child, which subprocess uses, from the parent's high-water mark), so children are
# started by a small launcher process that is itself started before this script grows.
LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.dup2(os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            os.execvp(job["cmd"][0], job["cmd"])
        finally:
            os._exit(127)
    deadline = time.time() + job["timeout"]
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            got, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.01)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}), flush=True)
"""
_launcher = None


def start_launcher():
    global _launcher
    _launcher = subprocess.Popen([sys.executable, "-S", "-E", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, bufsize=1)


def run_child(cmd, timeout):
    """Runs cmd through the launcher; returns (returncode, stdout, stderr, max RSS in bytes)."""
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        _launcher.stdin.write(json.dumps({"cmd": cmd, "timeout": timeout, "stdout": out, "stderr": err}) + "\n")
        _launcher.stdin.flush()
        res = json.loads(_launcher.stdout.readline())
        with open(out, errors="replace") as f:
            stdout = f.read()
        with open(err, errors="replace") as f:
            stderr = f.read()
    return res["rc"], stdout, stderr, res["maxrss_kb"] * 1024


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object in the output")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def git_describe():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        # (Earlier reports under bench/results/ do not change what is measured.)
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!bench/results"], capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def mib(b):
    if b is None:
        return "-"
    v = b / 2**20
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def ensure_models(models_dir, families, size="bench"):
    manifest_path = os.path.join(models_dir, "manifest.json")
    have = []
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            m = json.load(f)
        if m.get("size") == size:
            have = [fam["name"] for fam in m["families"]]
    missing = [f for f in families if f not in have]
    if missing:
        print(f"generating {size}-size models ({', '.join(missing)}) into {models_dir} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "models", "make_families.py"), models_dir,
                        "--size", size, "--families", ",".join(missing), "--merge", "--quiet"], check=True, stdout=sys.stderr)
    with open(manifest_path) as f:
        m = json.load(f)
    return {fam["name"]: fam for fam in m["families"]}


def bench_family(args, fam, base, label=None):
    model = os.path.join(base, fam["model"])
    inputs = [os.path.join(base, i["file"]) for i in fam["inputs"]]
    row = {"family": fam["name"], "label": label or LABELS.get(fam["name"], fam["name"]),
           "shapes": " ".join(f"{i['name']}{i['shape']}" for i in fam["inputs"]), "model_mb": fam["bytes"] / 1e6}
    common = ["--warmup", str(args.warmup), "--iterations", str(args.iterations)]

    worker = [sys.executable, os.path.abspath(__file__), "--ort-worker", model, *inputs, "--threads", str(args.threads), *common]
    # With --rounds R the two engines take turns R times (a shared machine's speed drifts over
    # seconds); each engine's row is its best round (--pick median: the median one), and every round's
    # median is listed under the table.
    gg_runs, ort_runs = [], []
    for _ in range(max(1, args.rounds)):
        rc, out, err, rss = run_child([args.gpugrid, "bench", model, *inputs, "--device", "cpu", "--threads",
                                       str(args.threads), *common, "--json"], args.timeout)
        if rc == 0:
            try:
                gg_runs.append((last_json(out), rss))
            except ValueError as e:
                row["gg_error"] = f"{e}: {out[-200:]}"
        else:
            row["gg_error"] = f"exit {rc}: " + (err.strip().splitlines() or ["(no message)"])[-1][:200]
        rc, out, err, rss = run_child(worker, args.timeout)
        if rc == 0:
            ort_runs.append((last_json(out), rss))
        else:
            row["ort_error"] = f"exit {rc}: " + (err.strip().splitlines() or ["(no message)"])[-1][:200]
    for key, runs in (("gg", gg_runs), ("ort", ort_runs)):
        if runs:
            runs_sorted = sorted(runs, key=lambda r: r[0]["median_ms"])
            pick = runs_sorted[0] if args.pick == "best" else runs_sorted[(len(runs_sorted) - 1) // 2]
            row[key] = pick[0]
            row[key + "_rss"] = max(r[1] for r in runs)
            row[key + "_rounds"] = [r[0]["median_ms"] for r in runs]
    rc, out, err, rss = run_child(worker + ["--baseline"], args.timeout)
    row["py_rss"] = rss if rc == 0 else 0

    if args.check and "gg" in row:
        sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
        import compare  # noqa: E402
        import numpy as np
        with tempfile.TemporaryDirectory() as d:
            rc, out, err, _ = run_child([args.gpugrid, "run", "--local", model, *inputs, "--device", "cpu", "--threads",
                                         str(args.threads), "--output-dir", d], args.timeout)
            if rc != 0:
                row["check"] = f"run failed (exit {rc})"
            else:
                bad = []
                for o in fam["outputs"]:
                    path = os.path.join(d, o["name"] + ".npy")
                    if not os.path.exists(path):
                        bad.append(f"{o['name']} missing")
                        continue
                    ok, msg = compare.check(np.load(os.path.join(base, o["file"])), np.load(path), fam["rtol"], fam["atol"])
                    if not ok:
                        bad.append(f"{o['name']}: {msg}")
                row["check"] = "yes" if not bad else "NO: " + "; ".join(bad)[:160]
    return row


def baseline_range(rows):
    vals = [r["py_rss"] for r in rows if r.get("py_rss")]
    if not vals:
        return "-"
    lo, hi = mib(min(vals)), mib(max(vals))
    return lo if lo == hi else f"{lo}-{hi}"


def report(args, rows, started, load_before, load_after, ort_version):
    lines = [f"# gpugrid engine vs onnxruntime, CPU ({started:%Y-%m-%d})", ""]
    lines += [f"- date: {started:%Y-%m-%d %H:%M} UTC",
              f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores (`nproc`: {len(os.sched_getaffinity(0))}), memory {mem_total()}",
              f"- OS: {platform.system()} {platform.release()}, Python {platform.python_version()}",
              f"- gpugrid: `{os.path.relpath(args.gpugrid, ROOT) if args.gpugrid.startswith(ROOT) else args.gpugrid}`, commit {git_describe()}",
              f"- onnxruntime {ort_version} (CPUExecutionProvider, intra_op_num_threads={args.threads}, inter_op_num_threads=1, "
              "ORT_SEQUENTIAL, default graph optimisations)",
              f"- both: {args.threads} threads, {args.warmup} warm-up runs, {args.iterations} timed runs, same inputs, "
              "float32, batch 1 (the small models: their test-size batch of 2), run one after the other"
              + (f", {args.rounds} rounds taken in turn (each engine's row: its round with the "
                 + ("lowest median)" if args.pick == "best" else "median median)")
                 if args.rounds > 1 else ""),
              f"- load average before / after: {load_before} / {load_after}", ""]
    cores = len(os.sched_getaffinity(0))
    if max(float(x) for x in (load_before.split()[0], load_after.split()[0])) > cores:
        lines += [f"**The machine was busy (1-minute load average above its {cores} cores): other processes shared "
                  "the CPU, so these latencies are indicative only; compare reports taken on an idle machine.**", ""]
    lines += ["| model | gpugrid median ms | gpugrid p90 ms | ORT median ms | ORT p90 ms | time ratio gpugrid/ORT "
              "| gpugrid peak_bytes MiB | gpugrid max RSS MiB | ORT max RSS MiB | RSS ratio gpugrid/ORT | outputs match |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    notes = []
    for r in rows:
        gg, ort = r.get("gg", {}), r.get("ort", {})
        cells = [r["label"],
                 f"{gg['median_ms']:.2f}" if gg else "error", f"{gg['p90_ms']:.2f}" if gg else "-",
                 f"{ort['median_ms']:.2f}" if ort else "error", f"{ort['p90_ms']:.2f}" if ort else "-",
                 ratio(gg.get("median_ms"), ort.get("median_ms")),
                 mib(gg.get("peak_bytes")), mib(r.get("gg_rss")), mib(r.get("ort_rss")),
                 ratio(r.get("gg_rss"), r.get("ort_rss")), r.get("check", "not checked")]
        lines.append("| " + " | ".join(cells) + " |")
        for k in ("gg_error", "ort_error"):
            if k in r:
                notes.append(f"- {r['label']}: {'gpugrid' if k == 'gg_error' else 'onnxruntime'} failed: {r[k]}")
    lines += [""]
    lines += ["Ratios above 1 mean gpugrid is slower or uses more memory. `peak_bytes` is the engine's own "
              "count of tensor memory at its peak; max RSS is the whole child process (`ru_maxrss`), which for "
              "onnxruntime includes the Python interpreter, numpy and the onnxruntime library "
              f"(that baseline, the same child without a session: {baseline_range(rows)} MiB).",
              "", "| model | inputs | model file MB | gpugrid session create ms (`load_ms`, model already parsed) "
              "| ORT InferenceSession ms (reads the file, optimises) |", "|---|---|--:|--:|--:|"]
    for r in rows:
        gg, ort = r.get("gg", {}), r.get("ort", {})
        lines.append(f"| {r['label']} | {r['shapes']} | {r['model_mb']:.1f} | "
                     f"{gg.get('load_ms', 0):.0f} | {ort.get('load_ms', 0):.0f} |")
    if args.rounds > 1:
        lines += ["", "Median ms of every round (gpugrid / ORT):", ""]
        for r in rows:
            g = ", ".join(f"{x:.2f}" for x in r.get("gg_rounds", []))
            o = ", ".join(f"{x:.2f}" for x in r.get("ort_rounds", []))
            lines.append(f"- {r['label']}: {g} / {o}")
    if notes:
        lines += ["", "Errors:", ""] + notes
    lines += ["", "Made by `bench/engine_vs_ort.py` (models from `tests/models/make_families.py --size bench`, "
              "seeded random weights)."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpugrid", default=os.path.join(ROOT, "build", "gpugrid"), help="the binary (default build/gpugrid)")
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "build", "families-bench"))
    ap.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=30,
                    help="untimed runs before the timed ones (default 30: at two threads the first tens of "
                         "runs of a fresh process were 20-30%% slower on a virtual machine, which made short "
                         "runs bimodal)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the two engines this many times per model")
    ap.add_argument("--pick", choices=["best", "median"], default="best",
                    help="each engine's row: its round with the lowest median (default) or the median median")
    ap.add_argument("--small", default="",
                    help="families also run at their test size (sub-millisecond models, where fixed per-op costs dominate)")
    ap.add_argument("--small-dir", default=os.path.join(ROOT, "build", "families-small"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds for one child process")
    ap.add_argument("--out", help="report path (default bench/results/engine-cpu-<date>.md)")
    ap.add_argument("--no-write", action="store_true", help="print the report only")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the output comparison")
    ap.add_argument("--ort-worker", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_worker:
        args.model = args.ort_worker
        return ort_worker(args)
    if args.inputs:
        ap.error("unexpected arguments: " + " ".join(args.inputs))
    start_launcher()
    args.gpugrid = os.path.abspath(args.gpugrid) if os.path.exists(args.gpugrid) else (shutil.which(args.gpugrid) or args.gpugrid)
    if not os.path.exists(args.gpugrid):
        ap.error(f"no gpugrid binary at {args.gpugrid} (build it, or pass --gpugrid)")
    families = [f for f in args.families.split(",") if f]
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    small = [f for f in args.small.split(",") if f]
    fams = ensure_models(args.models_dir, families) if families else {}
    small_fams = ensure_models(args.small_dir, small, "test") if small else {}
    rows = []
    for name in families:
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        rows.append(bench_family(args, fams[name], args.models_dir))
    for name in small:
        print(f"benchmarking {name} (test size) ...", file=sys.stderr, flush=True)
        fam = small_fams[name]
        shape = "x".join(str(d) for d in fam["inputs"][0]["shape"])
        rows.append(bench_family(args, fam, args.small_dir, f"{LABELS.get(name, name).split(' ')[0]} small, {shape}"))
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ort_version = next((r["ort"]["onnxruntime"] for r in rows if "ort" in r), "unknown")
    text = report(args, rows, started, load_before, load_after, ort_version)
    if not args.no_write:
        out = args.out or os.path.join(ROOT, "bench", "results", f"engine-cpu-{started:%Y-%m-%d}.md")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
