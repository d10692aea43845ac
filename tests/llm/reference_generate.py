#!/usr/bin/env python3
"""Greedy reference generations for a decoder folder, as token ids, one JSON line per prompt:
  genai folders:   onnxruntime-genai (og.Generator, greedy search)
  optimum folders: a plain onnxruntime loop feeding present.* back as past_key_values.*
                   (use_cache_branch for a merged decoder)
Prompts are given as token id lists (JSON) so the tokenizer is not part of the comparison.
Usage: reference_generate.py MODEL_DIR MAX_NEW_TOKENS '[[ids...], [ids...]]'
Prints [{"prompt": [...], "ids": [...]}] (ids: the generated tokens, EOS included when it came).
"""
import json
import os
import sys

import numpy as np


def eos_ids(d):
    for name in ("genai_config.json", "config.json"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            c = json.load(open(p))
            e = c["model"]["eos_token_id"] if "model" in c else c["eos_token_id"]
            return set(e if isinstance(e, list) else [e])
    return set()


def genai(d, max_new, prompts):
    import onnxruntime_genai as og
    model = og.Model(d)
    out = []
    for p in prompts:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(p) + max_new, batch_size=1)
        g = og.Generator(model, params)
        g.append_tokens(np.array([p], dtype=np.int32))
        ids = []
        while not g.is_done() and len(ids) < max_new:
            g.generate_next_token()
            ids.append(int(g.get_next_tokens()[0]))
        out.append({"prompt": p, "ids": ids})
    return out


def optimum(d, max_new, prompts):
    import onnxruntime as ort
    path = os.path.join(d, "decoder_model_merged.onnx")
    if not os.path.exists(path):
        path = os.path.join(d, "model.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in s.get_inputs()}
    eos = eos_ids(d)
    out = []
    for p in prompts:
        past = {}
        for n, i in ins.items():
            if n.startswith("past_key_values"):
                past[n] = np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
        ids, seq = [], list(p)
        feed_ids = list(p)
        while len(ids) < max_new:
            feed = {"input_ids": np.array([feed_ids], np.int64),
                    "attention_mask": np.ones((1, len(seq)), np.int64)}
            if "position_ids" in ins:
                feed["position_ids"] = np.arange(len(seq) - len(feed_ids), len(seq), dtype=np.int64)[None]
            if "use_cache_branch" in ins:
                feed["use_cache_branch"] = np.array([len(seq) > len(feed_ids)])
            feed.update(past)
            res = s.run(None, feed)
            names = [o.name for o in s.get_outputs()]
            logits = res[names.index("logits")][0, -1]
            for n, v in zip(names, res):
                if n.startswith("present"):
                    past["past_key_values" + n[len("present"):]] = v
            t = int(np.argmax(logits))
            ids.append(t)
            if t in eos:
                break
            seq.append(t)
            feed_ids = [t]
        out.append({"prompt": p, "ids": ids})
    return out


def main():
    d, max_new, prompts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    fn = genai if os.path.exists(os.path.join(d, "genai_config.json")) else optimum
    print(json.dumps(fn(d, max_new, prompts)))


if __name__ == "__main__":
    main()
