#!/usr/bin/env python3
"""One LLM decoder step, gpugrid's engine against onnxruntime on the same model file, CPU.

For each model (default: Llama-style and Qwen2-style ~100M-parameter decoders in fp32, fp16 and
int4, in onnxruntime-genai's model builder layout, made by tests/llm/make_decoders.py with
random weights into --models-dir when missing) it times two calls of model.onnx:
  decode   1 new token with a KV cache of --past tokens (past_key_values.N.* of that length)
  prefill  --prefill prompt tokens, empty cache
with `gpugrid bench MODEL NAME=FILE... --device cpu --threads T --json` and with onnxruntime
(intra_op_num_threads=T, ORT_SEQUENTIAL, default optimisations, in a child process through
bench/engine_vs_ort.py's worker), taking turns --rounds times; each engine's figure is its best
round's median. It also reports each child's peak RSS against the model file's size, and (unless
--no-check) compares gpugrid's decode logits with onnxruntime's.

Writes bench/results/llm-engine-<YYYY-MM-DD>.md (--out to change, --no-write to skip) and prints it.
Run it with the test environment: .venv/bin/python bench/llm_engine_step.py [--models llama-int4,...]
"""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import engine_vs_ort as evo  # noqa: E402  (launcher with RSS, JSON parsing, machine description)

DEFAULT_MODELS = ["llama-fp32", "llama-fp16", "llama-int4", "qwen2-fp32", "qwen2-fp16", "qwen2-int4"]


def ensure_model(args, spec):
    arch, prec = spec.split("-")
    d = os.path.join(args.models_dir, f"{args.size}-{arch}-{prec}-{args.format}")
    if not os.path.exists(os.path.join(d, "model.onnx")):
        print(f"making {d} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "llm", "make_decoders.py"), "--out", d, "--arch", arch,
                        "--format", args.format, "--precision", prec, "--size", args.size], check=True, stdout=sys.stderr)
    return d


def model_inputs(path):
    """(name, elem_type, dims) of the graph inputs, read without keeping the weights."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    res = []
    for i in m.graph.input:
        t = i.type.tensor_type
        res.append((i.name, t.elem_type, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]))
    return res


def write_inputs(inputs, seq, past, d, vocab_hint=1000):
    """.npy files in the model's input order for a step of `seq` tokens after `past` cached ones."""
    import onnx
    rng = np.random.default_rng(1)
    files = []
    for name, et, dims in inputs:
        if name == "input_ids":
            a = rng.integers(0, vocab_hint, size=(1, seq)).astype(np.int64)
        elif name == "attention_mask":
            a = np.ones((1, past + seq), np.int64)
        elif name == "position_ids":
            a = np.arange(past, past + seq, dtype=np.int64)[None]
        elif name.startswith("past_key_values"):
            dt = np.float16 if et == onnx.TensorProto.FLOAT16 else np.float32
            a = (rng.standard_normal((1, dims[1], past, dims[3])) * 0.5).astype(dt)
        elif name == "use_cache_branch":
            a = np.array([past > 0])
        else:
            raise SystemExit(f"llm_engine_step: unexpected model input {name}")
        p = os.path.join(d, name.replace("/", "_") + ".npy")
        np.save(p, a)
        files.append((name, p))
    return files


def bench_case(args, model, files):
    common = ["--warmup", str(args.warmup), "--iterations", str(args.iterations)]
    worker = [sys.executable, os.path.join(ROOT, "bench", "engine_vs_ort.py"), "--ort-worker", model,
              *[p for _, p in files], "--threads", str(args.threads), *common]
    gg_cmd = [args.gpugrid, "bench", model, *[f"{n}={p}" for n, p in files], "--device", "cpu", "--threads",
              str(args.threads), *common, "--json"]
    r = {"gg_rounds": [], "ort_rounds": []}
    for _ in range(args.rounds):
        rc, out, err, rss = evo.run_child(gg_cmd, args.timeout)
        if rc == 0:
            j = evo.last_json(out)
            r["gg_rounds"].append(j["median_ms"])
            r["gg_rss"] = max(r.get("gg_rss", 0), rss)
        else:
            r["gg_error"] = (err.strip().splitlines() or [f"exit {rc}"])[-1]
            break
        rc, out, err, rss = evo.run_child(worker, args.timeout)
        if rc == 0:
            j = evo.last_json(out)
            r["ort_rounds"].append(j["median_ms"])
            r["ort_rss"] = max(r.get("ort_rss", 0), rss)
            r["ort_version"] = j["onnxruntime"]
        else:
            r["ort_error"] = (err.strip().splitlines() or [f"exit {rc}"])[-1]
            break
    return r


def check_logits(args, model, files):
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        rc, out, err, _ = evo.run_child([args.gpugrid, "run", "--local", model, *[f"{n}={p}" for n, p in files], "--device",
                                         "cpu", "--threads", str(args.threads), "--output-dir", d], args.timeout)
        if rc != 0:
            return "gpugrid failed: " + (err.strip().splitlines() or [f"exit {rc}"])[-1]
        got = np.load(os.path.join(d, "logits.npy")).astype(np.float64)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    ref = sess.run(["logits"], {n: np.load(p) for n, p in files})[0].astype(np.float64)
    err = np.abs(got - ref).max() / max(1e-6, np.abs(ref).max())
    same_top = int((got.reshape(-1, got.shape[-1]).argmax(-1) == ref.reshape(-1, ref.shape[-1]).argmax(-1)).all())
    return f"max rel err {err:.1e}, argmax {'same' if same_top else 'DIFFERS'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpugrid", default=os.path.join(ROOT, "build", "gpugrid"))
    ap.add_argument("--models-dir", default=os.path.join(ROOT, "build", "llm-bench"))
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="ARCH-PRECISION,... (llama|qwen2|phi3|gpt2, fp32|fp16|int4)")
    ap.add_argument("--size", default="100m", choices=["tiny", "100m", "300m"])
    ap.add_argument("--format", default="genai", choices=["genai", "optimum"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--past", type=int, default=128, help="cached tokens for the decode step")
    ap.add_argument("--prefill", type=int, default=128, help="prompt tokens for the prefill step (0: skip)")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-check", dest="check", action="store_false")
    args = ap.parse_args()
    args.gpugrid = os.path.abspath(args.gpugrid)
    if not os.path.exists(args.gpugrid):
        ap.error(f"no gpugrid binary at {args.gpugrid}")
    evo.start_launcher()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    for spec in [s for s in args.models.split(",") if s]:
        d = ensure_model(args, spec)
        model = os.path.join(d, "model.onnx")
        ins = model_inputs(model)
        cases = [("decode", 1, args.past)] + ([("prefill", args.prefill, 0)] if args.prefill else [])
        for case, seq, past in cases:
            print(f"benchmarking {spec} {case} ...", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                files = write_inputs(ins, seq, past, tmp)
                r = bench_case(args, model, files)
                if args.check and case == "decode" and "gg_error" not in r:
                    r["check"] = check_logits(args, model, files)
            r.update(spec=spec, case=case, seq=seq, past=past, file_mb=sum(
                os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith((".onnx", ".data"))) / 2**20)
            rows.append(r)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ort_version = next((r["ort_version"] for r in rows if "ort_version" in r), "unknown")
    lines = [f"# LLM decoder step: gpugrid engine vs onnxruntime, CPU ({started:%Y-%m-%d})", "",
             f"- machine: {evo.cpu_model()}, {len(os.sched_getaffinity(0))} cores available, {evo.mem_total()} RAM",
             f"- gpugrid commit {evo.git_describe()}; onnxruntime {ort_version}",
             f"- models: `tests/llm/make_decoders.py --size {args.size} --format {args.format}` (random weights, seed 0)",
             f"- both: {args.threads} threads, {args.warmup} warm-up + {args.iterations} timed runs per round, "
             f"{args.rounds} rounds taken in turn; each figure is the best round's median",
             f"- decode: 1 token after {args.past} cached; prefill: {args.prefill} tokens, empty cache",
             f"- load average before / after: {load_before} / {load_after}", "",
             "| model | step | gpugrid ms | ORT ms | gpugrid/ORT | model files MiB | gpugrid RSS MiB | ORT RSS MiB | decode logits |",
             "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    notes = []
    for r in rows:
        g = min(r["gg_rounds"]) if r["gg_rounds"] else None
        o = min(r["ort_rounds"]) if r["ort_rounds"] else None
        lines.append(f"| {r['spec']} | {r['case']} | {g and f'{g:.2f}' or 'error'} | {o and f'{o:.2f}' or 'error'} | "
                     f"{evo.ratio(g, o)} | {r['file_mb']:.0f} | {evo.mib(r.get('gg_rss'))} | {evo.mib(r.get('ort_rss'))} | "
                     f"{r.get('check', '')} |")
        for k in ("gg_error", "ort_error"):
            if k in r:
                notes.append(f"- {r['spec']} {r['case']}: {'gpugrid' if k == 'gg_error' else 'onnxruntime'} failed: {r[k]}")
    lines += ["", "Ratios below 1 mean gpugrid is faster. RSS is the child process's peak (`ru_maxrss`); "
              "onnxruntime's includes the Python interpreter and numpy.", "", "Median ms of every round (gpugrid / ORT):", ""]
    lines += [f"- {r['spec']} {r['case']}: {', '.join(f'{x:.2f}' for x in r['gg_rounds'])} / "
              f"{', '.join(f'{x:.2f}' for x in r['ort_rounds'])}" for r in rows]
    if notes:
        lines += ["", "Errors:", ""] + notes
    lines += ["", "Made by `bench/llm_engine_step.py`."]
    text = "\n".join(lines) + "\n"
    if not args.no_write:
        out = args.out or os.path.join(ROOT, "bench", "results", f"llm-engine-{started:%Y-%m-%d}.md")
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
