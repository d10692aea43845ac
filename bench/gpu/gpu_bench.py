#!/usr/bin/env python3
"""GPU figures for gpugrid's CUDA backend, all in one run on one card.

Builds the benchmark models with PyTorch (random weights; torchvision and transformers give
the architectures, nothing is downloaded), exports them to ONNX, then for each model and batch
size measures `gpugrid bench --device cuda` against PyTorch eager on the same card (and
onnxruntime's CUDA provider when it is installed), checks gpugrid's outputs against PyTorch's,
and measures a bandwidth-bound chain and a GEMM chain against the card's own copy rate and
cuBLAS (through PyTorch). Both engines compute in fp32 (PyTorch's cuDNN TF32 default is turned
off); at batch 32 each model is also timed with TF32 on both sides (`--precision tf32`).
Writes results.json and results.md into --out.

Usage: gpu_bench.py --gpugrid PATH --out DIR [--quick]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def log(*a):
    print(*a, flush=True)


def export(model, args, path, names_in, names_out):
    kwargs = dict(opset_version=17, input_names=names_in, output_names=names_out, do_constant_folding=True)
    try:
        torch.onnx.export(model, args, path, dynamo=False, **kwargs)
    except TypeError:
        torch.onnx.export(model, args, path, **kwargs)


def torch_time(model, inputs, iters, warmup=5):
    """Host-to-host latency: inputs copied to the GPU, the model, the output copied back."""
    dev = torch.device("cuda")
    with torch.no_grad():
        for _ in range(warmup):
            out = model(*[t.to(dev) for t in inputs])
            first(out).cpu()
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            out = model(*[t.to(dev) for t in inputs])
            res = first(out).cpu()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), float(np.percentile(times, 90)), res.numpy()


def first(out):
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


def gpugrid_bench(gg, model_path, input_files, iters, extra=()):
    cmd = [gg, "bench", model_path, *input_files, "--device", "cuda", "--iterations", str(iters), "--json", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip()[-400:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def gpugrid_outputs(gg, model_path, input_files, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    p = subprocess.run([gg, "run", "--local", "--device", "cuda", model_path, *input_files, "--output-dir", out_dir],
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return None, (p.stderr or p.stdout).strip()[-400:]
    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".npy"))
    return [np.load(os.path.join(out_dir, f)) for f in files], ""


def ort_time(model_path, feeds, iters):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    so = ort.SessionOptions()
    s = ort.InferenceSession(model_path, so, providers=["CUDAExecutionProvider"])
    for _ in range(5):
        s.run(None, feeds)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        s.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def build_models(quick):
    import torch.nn as nn
    models = []
    mlp = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000))
    models.append(("mlp", mlp, lambda b: [torch.randn(b, 1024)], ["x"]))
    try:
        import torchvision
        models.append(("resnet18", torchvision.models.resnet18(weights=None), lambda b: [torch.randn(b, 3, 224, 224)], ["images"]))
        models.append(("mobilenetv2", torchvision.models.mobilenet_v2(weights=None), lambda b: [torch.randn(b, 3, 224, 224)], ["images"]))
    except Exception as e:  # noqa: BLE001
        log("torchvision unavailable:", e)
    if not quick:
        try:
            import transformers
            cfg = transformers.BertConfig()
            bert = transformers.BertModel(cfg, add_pooling_layer=False)
            models.append(("bert-base-seq128", bert, lambda b: [torch.randint(0, cfg.vocab_size, (b, 128)),
                                                                torch.ones(b, 128, dtype=torch.int64)],
                           ["input_ids", "attention_mask"]))
            gcfg = transformers.GPT2Config()
            gpt2 = transformers.GPT2Model(gcfg)
            gpt2.config.use_cache = False
            models.append(("gpt2-small-seq64", gpt2, lambda b: [torch.randint(0, gcfg.vocab_size, (b, 64))], ["input_ids"]))
        except Exception as e:  # noqa: BLE001
            log("transformers models unavailable:", e)
    return models


def chain_models(out_dir, n_elems, gemm_n):
    """An Expand + 10 Add chain (bandwidth) and a 4-MatMul chain (GEMM), as ONNX files."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Expand", ["x", "shape"], ["e0"])]
    inits = [numpy_helper.from_array(np.array([n_elems], dtype=np.int64), "shape"),
             numpy_helper.from_array(np.full(n_elems, 0.5, dtype=np.float32), "y")]
    for i in range(10):
        nodes.append(helper.make_node("Add", [f"e{i}", "y"], [f"e{i+1}"]))
    nodes.append(helper.make_node("ReduceMax", ["e10"], ["out"], keepdims=0))
    g = helper.make_graph(nodes, "bw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])], inits)
    bw = os.path.join(out_dir, "bandwidth.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), bw)
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    cur = "a"
    for i in range(4):
        w = (rng.standard_normal((gemm_n, gemm_n)) / np.sqrt(gemm_n)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]))
        cur = f"m{i}"
    nodes.append(helper.make_node("ReduceMax", [cur], ["out"], keepdims=0))
    g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [gemm_n, gemm_n])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])], inits)
    gm = os.path.join(out_dir, "gemm.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), gm, save_as_external_data=True,
              location="gemm.weights")
    return bw, gm, [numpy_helper.to_array(t) for t in inits]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpugrid", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--iterations", type=int, default=20)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = os.path.join(a.out, "models")
    os.makedirs(work, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    # The fp32 comparison is fp32 on both sides: PyTorch lets cuDNN use TF32 for convolutions
    # unless told not to. The TF32 figures below turn it on for both (gpugrid: --precision tf32).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {"card": props.name, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "host": platform.node(), "models": [], "kernels": {},
           "note": "torch fp32 with cudnn/matmul TF32 off; *_tf32 entries: both engines with TF32 on"}
    log("card:", props.name)
    torch.manual_seed(0)
    for name, model, make, in_names in build_models(a.quick):
        model = model.eval()
        for batch in (1, 32):
            entry = {"model": name, "batch": batch}
            try:
                inputs = make(batch)
                path = os.path.join(work, f"{name}-b{batch}.onnx")
                export(model, tuple(inputs), path, in_names, ["output"])
                files = []
                for nm, t in zip(in_names, inputs):
                    f = os.path.join(work, f"{name}-b{batch}-{nm}.npy")
                    np.save(f, t.numpy())
                    files.append(f)
                model_cuda = model.to("cuda")
                t_med, t_p90, ref = torch_time(model_cuda, inputs, a.iterations)
                model.to("cpu")
                entry.update(torch_median_ms=t_med, torch_p90_ms=t_p90)
                g = gpugrid_bench(a.gpugrid, path, files, a.iterations)
                entry["gpugrid"] = g
                if batch == 32 and os.environ.get("PROFILE"):
                    prof = gpugrid_bench(a.gpugrid, path, files, 3, ("--profile",))
                    entry["profile_op_ms"] = prof.get("op_ms", prof)
                if "median_ms" in g:
                    entry["ratio_vs_torch"] = g["median_ms"] / t_med
                if batch == 32:  # TF32 on both sides (batch 32 only, to keep the run short)
                    try:
                        torch.backends.cudnn.allow_tf32 = True
                        torch.backends.cuda.matmul.allow_tf32 = True
                        model_cuda = model.to("cuda")
                        t32_med, _, _ = torch_time(model_cuda, inputs, a.iterations)
                        model.to("cpu")
                        g32 = gpugrid_bench(a.gpugrid, path, files, a.iterations, ("--precision", "tf32"))
                        entry["torch_tf32_median_ms"] = t32_med
                        entry["gpugrid_tf32"] = g32
                        if "median_ms" in g32:
                            entry["ratio_vs_torch_tf32"] = g32["median_ms"] / t32_med
                    except Exception as e:  # noqa: BLE001
                        entry["tf32_error"] = repr(e)[-200:]
                    finally:
                        torch.backends.cudnn.allow_tf32 = False
                        torch.backends.cuda.matmul.allow_tf32 = False
                outs, err = gpugrid_outputs(a.gpugrid, path, files, os.path.join(work, f"{name}-b{batch}-out"))
                if outs is None:
                    entry["check"] = "run failed: " + err
                else:
                    got = outs[0] if len(outs) == 1 else next((o for o in outs if o.shape == ref.shape), outs[0])
                    if got.shape != ref.shape:
                        entry["check"] = f"shape {got.shape} vs torch {ref.shape}"
                    else:
                        diff = float(np.max(np.abs(got - ref)))
                        scale = float(np.max(np.abs(ref))) or 1.0
                        entry["max_abs_diff"] = diff
                        entry["check"] = "ok" if np.allclose(got, ref, rtol=1e-3, atol=1e-3 * scale) else "MISMATCH"
                ort_ms = ort_time(path, {nm: t.numpy() for nm, t in zip(in_names, inputs)}, a.iterations)
                if ort_ms is not None:
                    entry["ort_cuda_median_ms"] = ort_ms
            except Exception as e:  # noqa: BLE001
                entry["error"] = repr(e)[-400:]
            log(json.dumps(entry))
            res["models"].append(entry)
            torch.cuda.empty_cache()
    # Kernels: bandwidth and GEMM.
    n = 1 << 26
    gemm_n = 4096
    bw, gm, ws = chain_models(work, n, gemm_n)
    xf = os.path.join(work, "x1.npy")
    np.save(xf, np.array([1.0], dtype=np.float32))
    g = gpugrid_bench(a.gpugrid, bw, [xf], a.iterations)
    x = torch.empty(n, device="cuda")
    y = torch.empty(n, device="cuda")
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        y.copy_(x)
    torch.cuda.synchronize()
    copy_gbs = 20 * 2 * 4 * n / (time.perf_counter() - t0) / 1e9
    bw_entry = {"elements": n, "torch_copy_GBps": copy_gbs, "gpugrid": g}
    if "median_ms" in g:
        moved = 4 * n + 10 * 12 * n + 4 * n  # Expand write, 10 Adds (2 reads, 1 write), ReduceMax read
        bw_entry["gpugrid_GBps"] = moved / (g["median_ms"] / 1000) / 1e9
        bw_entry["fraction_of_copy_rate"] = bw_entry["gpugrid_GBps"] / copy_gbs
    res["kernels"]["bandwidth"] = bw_entry
    log(json.dumps(bw_entry))
    af = os.path.join(work, "a_gemm.npy")
    a_np = np.random.default_rng(1).standard_normal((gemm_n, gemm_n)).astype(np.float32)
    np.save(af, a_np)
    g = gpugrid_bench(a.gpugrid, gm, [af], max(5, a.iterations // 2))
    wt = [torch.from_numpy(w).cuda() for w in ws]
    at = torch.from_numpy(a_np)

    def chain():
        c = at.cuda()
        for w in wt:
            c = c @ w
        return c.max().cpu()

    for _ in range(3):
        chain()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        chain()
        times.append((time.perf_counter() - t0) * 1000)
    t_gemm = statistics.median(times)
    flops = 4 * 2 * gemm_n ** 3
    gemm_entry = {"n": gemm_n, "torch_chain_ms": t_gemm, "torch_TFLOPs": flops / (t_gemm / 1000) / 1e12, "gpugrid": g}
    if "median_ms" in g:
        gemm_entry["gpugrid_TFLOPs"] = flops / (g["median_ms"] / 1000) / 1e12
        gemm_entry["ratio_vs_torch"] = g["median_ms"] / t_gemm
    res["kernels"]["gemm"] = gemm_entry
    log(json.dumps(gemm_entry))
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = [f"# gpugrid CUDA benchmarks: {res['card']}, {res['date']}", "",
             "Host-to-host latency (inputs uploaded, outputs downloaded each run), fp32, no TF32.", "",
             "| model | batch | gpugrid median ms | PyTorch eager ms | ratio | ORT CUDA ms | output check |",
             "|---|---|---|---|---|---|---|"]
    for e in res["models"]:
        gm_ = e.get("gpugrid", {})
        lines.append(f"| {e['model']} | {e['batch']} | {gm_.get('median_ms', gm_.get('error', e.get('error', '-')))} | "
                     f"{e.get('torch_median_ms', '-')} | {e.get('ratio_vs_torch', '-')} | {e.get('ort_cuda_median_ms', '-')} | "
                     f"{e.get('check', '-')} |")
    lines += ["", f"Bandwidth chain: {json.dumps(res['kernels']['bandwidth'])}", "",
              f"GEMM chain: {json.dumps(res['kernels']['gemm'])}", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
