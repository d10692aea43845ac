#!/usr/bin/env python3
"""Generation speed: `gpugrid generate --local --json` against onnxruntime-genai on the same model
folder (genai layout), same thread count, in alternating rounds; best of N per side.

Measures, per side: time to first token (prefill of the prompt + the first token) and decode
tokens/s (tokens after the first, per second), greedy, the EOS ignored is not possible from the
command line, so the prompt and max tokens should give answers of the asked length on random-weight
models (the script reports the generated count of each side).

Usage: llm_bench.py GPUGRID_BINARY MODEL_DIR [--threads N] [--rounds N] [--prompt-tokens N]
                    [--new-tokens N] [--json]
Prints a table (or one JSON object) with both sides' best figures and the gpugrid/genai ratios
(above 1 means gpugrid is faster for tokens/s, slower for time to first token).
"""
import argparse
import json
import os
import subprocess
import sys
import time


def gpugrid_once(binary, model, prompt_text, new_tokens, threads):
    out = subprocess.run([binary, "generate", "--local", "--no-template", "--threads", str(threads), "--json",
                          "--max-tokens", str(new_tokens), "--prompt", prompt_text, model],
                         capture_output=True, text=True, check=True)
    j = json.loads(out.stdout)
    return {"ttft_ms": j["time_to_first_token_ms"], "decode_tps": j["decode_tokens_per_s"],
            "generated": j["generated_tokens"], "prompt_tokens": j["prompt_tokens"]}


def genai_once(og, model, prompt_ids, new_tokens):
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + new_tokens, batch_size=1)
    g = og.Generator(model, params)
    import numpy as np
    t0 = time.perf_counter()
    g.append_tokens(np.array([prompt_ids], dtype=np.int32))
    g.generate_next_token()
    t1 = time.perf_counter()
    n = 1
    while not g.is_done() and n < new_tokens:
        g.generate_next_token()
        n += 1
    t2 = time.perf_counter()
    return {"ttft_ms": (t1 - t0) * 1000, "decode_tps": (n - 1) / (t2 - t1) if n > 1 else 0.0, "generated": n,
            "prompt_tokens": len(prompt_ids)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import onnxruntime_genai as og
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    # A prompt of about the asked number of tokens, given to both sides as the same ids.
    words = ("the quick brown fox jumps over the lazy dog " * (a.prompt_tokens + 8)).split()
    text = " ".join(words[:a.prompt_tokens])
    ids = tok.encode(text).ids
    while len(ids) > a.prompt_tokens and len(words) > 1:
        words = words[:-1]
        text = " ".join(words[:a.prompt_tokens])
        ids = tok.encode(text).ids
        if len(ids) <= a.prompt_tokens:
            break

    # onnxruntime-genai takes its thread count from genai_config.json: run it on a folder of
    # links to the model's files with that one setting changed.
    import tempfile
    tmp = tempfile.mkdtemp(prefix="llm_bench_")
    for f in os.listdir(a.model):
        if f != "genai_config.json":
            os.symlink(os.path.abspath(os.path.join(a.model, f)), os.path.join(tmp, f))
    gcfg = json.load(open(os.path.join(a.model, "genai_config.json")))
    so = gcfg["model"]["decoder"].setdefault("session_options", {})
    so["intra_op_num_threads"] = a.threads
    so["inter_op_num_threads"] = 1
    json.dump(gcfg, open(os.path.join(tmp, "genai_config.json"), "w"))
    model = og.Model(tmp)

    best = {"gpugrid": None, "genai": None}
    for r in range(a.rounds):
        for side in (("gpugrid", "genai") if r % 2 == 0 else ("genai", "gpugrid")):
            m = (gpugrid_once(a.binary, a.model, text, a.new_tokens, a.threads) if side == "gpugrid"
                 else genai_once(og, model, ids, a.new_tokens))
            b = best[side]
            if b is None:
                best[side] = dict(m)
            else:
                b["ttft_ms"] = min(b["ttft_ms"], m["ttft_ms"])
                b["decode_tps"] = max(b["decode_tps"], m["decode_tps"])
    res = {"model": a.model, "threads": a.threads, "rounds": a.rounds, "prompt_tokens": len(ids),
           "new_tokens": a.new_tokens, "gpugrid": best["gpugrid"], "genai": best["genai"],
           "ratio_decode_tps": best["gpugrid"]["decode_tps"] / max(1e-9, best["genai"]["decode_tps"]),
           "ratio_ttft": best["gpugrid"]["ttft_ms"] / max(1e-9, best["genai"]["ttft_ms"])}
    if a.json:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(res))
        return
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"model {a.model}  threads {a.threads}  best of {a.rounds}  prompt {len(ids)} tokens")
    print(f"{'':10} {'ttft ms':>10} {'decode tok/s':>14} {'generated':>10}")
    for side in ("gpugrid", "genai"):
        b = best[side]
        print(f"{side:10} {b['ttft_ms']:10.2f} {b['decode_tps']:14.1f} {b['generated']:10d}")
    print(f"gpugrid/genai: decode tokens/s x{res['ratio_decode_tps']:.2f}, time to first token x{res['ratio_ttft']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
