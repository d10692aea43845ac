#!/usr/bin/env python3
"""Makes a random-weight decoder-only LLM folder for tests and benchmarks, in one of the two
layouts gpugrid reads:

  genai    what onnxruntime-genai's model builder writes: model.onnx with GroupQueryAttention
           (past_key_values.N.key/value in, present.N.key/value out, attention_mask giving
           seqlens_k and total_sequence_length), SimplifiedLayerNormalization /
           SkipSimplifiedLayerNormalization, rotary embeddings inside GQA (do_rotary=1: llama,
           phi3) or as RotaryEmbedding nodes fed by a position_ids input (qwen2), MatMulNBits
           (4-bit blocks of 32, accuracy_level 4) for int4, fp16 weights and I/O for fp16, plus
           genai_config.json (a GPT-2 graph declares onnxruntime-genai's generic decoder type,
           "llama": its "gpt2" type means the older combined-past layout).
           The graph is written here with onnx.helper, node for node in the builder's layout: the
           real builder (onnxruntime_genai.models.builder) needs onnx_ir, a recent transformers and
           torch 2, which do not install beside the test environment's torch 1.13 / onnx 1.12.
  optimum  what optimum's export writes: model.onnx from torch.onnx.export of a small HF-style
           module written here (inputs input_ids, attention_mask, position_ids,
           past_key_values.N.key/value; outputs logits, present.N.key/value), config.json and
           generation_config.json; with --merged, decoder_model_merged.onnx, where an If on the
           use_cache_branch input picks the with-past or the no-past graph, as optimum merges them.

Both get tokenizer.json (a byte-level BPE trained here with the `tokenizers` package on a
generated corpus), tokenizer_config.json with the architecture's chat template, and
special_tokens_map.json. The same --seed gives the same weights in every layout and precision, so
folders can be compared with each other; --check runs the folder (onnxruntime for the graph:
prefill, then one decode step with the cache, against a numpy reference of the same weights;
onnxruntime-genai for genai folders: a greedy generation) and exits 1 on a mismatch.

Usage: make_decoders.py --out DIR --arch llama|qwen2|phi3|gpt2 --format genai|optimum
                        --precision fp32|fp16|int4 --size tiny|100m|300m [--merged] [--seed N]
                        [--int4-asym] [--check]
Nothing is downloaded.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SIZES = {
    #         hidden layers heads kv inter  vocab  context
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, inter=160, vocab=0, context=256),
    "100m": dict(hidden=768, layers=12, heads=12, kv_heads=4, inter=2048, vocab=32000, context=2048),
    "300m": dict(hidden=1024, layers=24, heads=16, kv_heads=8, inter=2816, vocab=32000, context=2048),
}

ARCH = {
    "llama": dict(norm="rms", mlp="gated", qkv_bias=False, rope_theta=500000.0, rope="gqa", packed=False,
                  eps=1e-5, hf_type="LlamaForCausalLM", model_type="llama"),
    "qwen2": dict(norm="rms", mlp="gated", qkv_bias=True, rope_theta=1000000.0, rope="node", packed=False,
                  eps=1e-6, hf_type="Qwen2ForCausalLM", model_type="qwen2"),
    "phi3": dict(norm="rms", mlp="gated", qkv_bias=False, rope_theta=10000.0, rope="gqa", packed=True,
                 eps=1e-5, hf_type="Phi3ForCausalLM", model_type="phi3"),
    "gpt2": dict(norm="layer", mlp="gelu", qkv_bias=True, rope_theta=0.0, rope="none", packed=True,
                 eps=1e-5, hf_type="GPT2LMHeadModel", model_type="gpt2"),
}

# Special tokens and chat template of each architecture's family.
SPECIALS = {
    "llama": dict(tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                          "<|eot_id|>"], bos="<|begin_of_text|>", eos=["<|eot_id|>", "<|end_of_text|>"],
                  template="llama3", tokenizer_class="PreTrainedTokenizerFast"),
    "qwen2": dict(tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None,
                  eos=["<|im_end|>", "<|endoftext|>"], template="chatml_qwen2", tokenizer_class="Qwen2Tokenizer"),
    "phi3": dict(tokens=["<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
                         "<|end|>"], bos="<s>", eos=["<|end|>", "<|endoftext|>"], template="phi3",
                 tokenizer_class="PreTrainedTokenizerFast"),
    "gpt2": dict(tokens=["<|endoftext|>"], bos="<|endoftext|>", eos=["<|endoftext|>"], template=None,
                 tokenizer_class="GPT2Tokenizer"),
}

GPT2_TEMPLATE = ("{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")

BLOCK = 32  # MatMulNBits block size, as the model builder's default


def fail(msg):
    print(f"make_decoders: {msg}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- tokenizer

def make_tokenizer(arch):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from make_tokenizers import LLAMA3_PATTERN, QWEN2_PATTERN, corpus
    sp = SPECIALS[arch]
    tok = Tokenizer(models.BPE(ignore_merges=(arch == "llama")))
    if arch == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pattern = QWEN2_PATTERN if arch == "qwen2" else LLAMA3_PATTERN
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=sp["tokens"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if sp["bos"] and arch != "gpt2":
        bos = tok.token_to_id(sp["bos"])
        tok.post_processor = processors.TemplateProcessing(single=f"{sp['bos']} $A", special_tokens=[(sp["bos"], bos)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def write_tokenizer(out, arch, tok, context):
    from make_chat_templates import TEMPLATES
    sp = SPECIALS[arch]
    tok.save(os.path.join(out, "tokenizer.json"))
    template = TEMPLATES[sp["template"]] if sp["template"] else GPT2_TEMPLATE
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": True} for t in sp["tokens"]}
    cfg = {
        "add_bos_token": bool(sp["bos"]) and arch != "gpt2",
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": sp["bos"],
        "eos_token": sp["eos"][0],
        "pad_token": sp["eos"][-1],
        "unk_token": "<unk>" if "<unk>" in sp["tokens"] else None,
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "tokenizer_class": sp["tokenizer_class"],
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": sp["bos"], "eos_token": sp["eos"][0], "pad_token": sp["eos"][-1]}, f, indent=2)


# ----------------------------------------------------------------------------- weights

def make_config(arch, size, tok_vocab):
    c = dict(SIZES[size])
    c.update(ARCH[arch])
    c["arch"] = arch
    if arch == "gpt2":
        c["kv_heads"] = c["heads"]
    c["head_dim"] = c["hidden"] // c["heads"]
    c["vocab"] = max(c["vocab"], (tok_vocab + 63) // 64 * 64)
    return c


def make_weights(c, seed):
    """HF layout: Linear weights are [out, in]. float32."""
    rng = np.random.default_rng(seed)

    def w(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def norm_w(n):
        return (1.0 + w(n, std=0.1)).astype(np.float32)

    H, I, hd = c["hidden"], c["inter"], c["head_dim"]
    qd, kd = c["heads"] * hd, c["kv_heads"] * hd
    W = {"embed": w(c["vocab"], H)}
    if c["arch"] == "gpt2":
        W["wpe"] = w(c["context"], H)
    for i in range(c["layers"]):
        p = f"l{i}."
        W[p + "ln1"] = norm_w(H)
        W[p + "q"], W[p + "k"], W[p + "v"] = w(qd, H), w(kd, H), w(kd, H)
        W[p + "o"] = w(H, qd)
        W[p + "ln2"] = norm_w(H)
        if c["mlp"] == "gated":
            W[p + "gate"], W[p + "up"] = w(I, H), w(I, H)
        else:
            W[p + "up"] = w(I, H)
        W[p + "down"] = w(H, I)
        if c["qkv_bias"]:
            W[p + "qb"], W[p + "kb"], W[p + "vb"] = w(qd), w(kd), w(kd)
        if c["norm"] == "layer":
            W[p + "ln1b"], W[p + "ln2b"] = w(H), w(H)
            W[p + "ob"], W[p + "upb"], W[p + "downb"] = w(H), w(I), w(H)
    W["lnf"] = norm_w(H)
    if c["norm"] == "layer":
        W["lnfb"] = w(H)
        W["lm_head"] = W["embed"]  # GPT-2 ties the head to the embedding
    else:
        W["lm_head"] = w(c["vocab"], H)
    return W


def quantize_int4(wt, asym):
    """wt: [N, K] float32 (an HF Linear weight: N outputs, K inputs) -> MatMulNBits B, scales,
    zero points (or None) and the dequantized [N, K] weight. Symmetric as MLAS's blockwise
    quantizer: scale = (the block's value of largest magnitude) / -8, implicit zero point 8."""
    N, K = wt.shape
    if K % BLOCK:
        fail(f"K={K} is not a multiple of the block size {BLOCK}")
    nb = K // BLOCK
    blocks = wt.reshape(N, nb, BLOCK).astype(np.float32)
    if asym:
        mn = np.minimum(blocks.min(axis=2), 0.0)
        mx = np.maximum(blocks.max(axis=2), 0.0)
        scale = (mx - mn) / 15.0
        scale[scale == 0] = 1.0
        zp = np.clip(np.rint(-mn / scale), 0, 15).astype(np.uint8)
    else:
        idx = np.abs(blocks).argmax(axis=2)
        vmax = np.take_along_axis(blocks, idx[..., None], axis=2)[..., 0]
        scale = vmax / -8.0
        scale[scale == 0] = 1.0
        zp = np.full((N, nb), 8, np.uint8)
    scale = scale.astype(np.float32)
    q = np.clip(np.rint(blocks / scale[..., None]) + zp[..., None], 0, 15).astype(np.uint8)
    deq = ((q.astype(np.float32) - zp[..., None].astype(np.float32)) * scale[..., None]).reshape(N, K)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)  # [N, nb, BLOCK/2]
    zpp = None
    if asym:
        zpad = zp if nb % 2 == 0 else np.concatenate([zp, np.zeros((N, 1), np.uint8)], axis=1)
        zpp = (zpad[:, 0::2] | (zpad[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    return packed, scale.reshape(-1), zpp, deq


# ----------------------------------------------------------------------------- numpy reference

def rope_cos_sin(c, positions):
    hd = c["head_dim"]
    inv = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    f = np.asarray(positions, np.float64)[:, None] * inv[None, :]
    return np.cos(f).astype(np.float32), np.sin(f).astype(np.float32)


def apply_rope(x, cos, sin):  # x [h, S, hd]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def reference_logits(c, W, ids):
    """Full causal forward of one sequence, float64 math on the given (dequantized) weights."""
    S, hd = len(ids), c["head_dim"]
    nh, kvh = c["heads"], c["kv_heads"]
    f = lambda a: np.asarray(a, np.float64)

    def norm(x, g, b=None):
        if c["norm"] == "rms":
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + c["eps"]) * f(g)
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + c["eps"]) * f(g) + f(b)

    x = f(W["embed"])[ids]
    if c["arch"] == "gpt2":
        x = x + f(W["wpe"])[np.arange(S)]
    cos, sin = rope_cos_sin(c, np.arange(S)) if c["rope"] != "none" else (None, None)
    causal = np.tril(np.ones((S, S), bool))
    for i in range(c["layers"]):
        p = f"l{i}."
        h = norm(x, W[p + "ln1"], W.get(p + "ln1b"))
        q, k, v = h @ f(W[p + "q"]).T, h @ f(W[p + "k"]).T, h @ f(W[p + "v"]).T
        if c["qkv_bias"]:
            q, k, v = q + f(W[p + "qb"]), k + f(W[p + "kb"]), v + f(W[p + "vb"])
        q = q.reshape(S, nh, hd).transpose(1, 0, 2)
        k = k.reshape(S, kvh, hd).transpose(1, 0, 2)
        v = v.reshape(S, kvh, hd).transpose(1, 0, 2)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = np.repeat(k, nh // kvh, axis=0)
        v = np.repeat(v, nh // kvh, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.where(causal, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(S, nh * hd) @ f(W[p + "o"]).T
        if p + "ob" in W:
            o = o + f(W[p + "ob"])
        x = x + o
        h = norm(x, W[p + "ln2"], W.get(p + "ln2b"))
        if c["mlp"] == "gated":
            g = h @ f(W[p + "gate"]).T
            m = (g / (1 + np.exp(-g))) * (h @ f(W[p + "up"]).T)
        else:
            u = h @ f(W[p + "up"]).T + f(W[p + "upb"])
            m = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
        m = m @ f(W[p + "down"]).T
        if p + "downb" in W:
            m = m + f(W[p + "downb"])
        x = x + m
    x = norm(x, W["lnf"], W.get("lnfb"))
    return x @ f(W["lm_head"]).T


# ----------------------------------------------------------------------------- genai graph

class graph_builder:
    def __init__(self, io_type):
        self.nodes, self.inits, self.n = [], [], 0
        self.io = io_type  # TensorProto.FLOAT or FLOAT16
        self.np_io = np.float16 if io_type == TensorProto.FLOAT16 else np.float32

    def name(self, base):
        self.n += 1
        return f"/{base}_{self.n}"

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op, inputs, n_out=1, domain="", base=None, outputs=None, **attrs):
        outs = outputs or [self.name(base or op) + f"/out{j}" for j in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name((base or op) + "/node"),
                                           domain=domain, **attrs))
        return outs[0] if n_out == 1 and not outputs else outs


def linear(g, x, name, wt, bias, quant, asym, deq_out):
    """x @ wt.T (+ bias) as MatMul or MatMulNBits; records the weights as the graph uses them."""
    N, K = wt.shape
    if quant:
        packed, scales, zp, deq = quantize_int4(wt, asym)
        ins = [x, g.init(name + ".qweight", packed), g.init(name + ".scales", scales.astype(g.np_io))]
        if zp is not None:
            ins.append(g.init(name + ".qzeros", zp))
        y = g.node("MatMulNBits", ins, domain="com.microsoft", base=name + "/MatMulNBits", K=K, N=N, bits=4,
                   block_size=BLOCK, accuracy_level=4)
        deq_out[name] = deq
    else:
        wq = wt.astype(g.np_io)
        y = g.node("MatMul", [x, g.init(name + ".weight", np.ascontiguousarray(wq.T))], base=name + "/MatMul")
        deq_out[name] = wq.astype(np.float32)
    if bias is not None:
        y = g.node("Add", [y, g.init(name + ".bias", bias.astype(g.np_io))], base=name + "/Add")
    return y


def build_genai(c, W, precision, asym):
    """Returns (onnx model, the weights as the graph holds them, dequantized to float32)."""
    io = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    g = graph_builder(io)
    quant = precision == "int4"
    E = {}  # effective weights for the reference
    hd, L = c["head_dim"], c["layers"]
    nh, kvh = c["heads"], c["kv_heads"]
    cast = lambda a: a.astype(g.np_io)

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])]
    use_pos = c["rope"] == "node" or c["arch"] == "gpt2"
    if use_pos:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]))
    outputs = [helper.make_tensor_value_info("logits", io, ["batch_size", "sequence_length", c["vocab"]])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", io,
                                                        ["batch_size", kvh, "past_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", io,
                                                         ["batch_size", kvh, "total_sequence_length", hd]))

    # seqlens_k = sum(attention_mask) - 1 and total_sequence_length, as int32 (the builder's subgraph)
    one = g.init("/model/constants/INT64/[1]", np.array([1], np.int64))
    rs = g.node("ReduceSum", ["attention_mask", one], base="/model/attn_mask_reformat/ReduceSum", keepdims=0)
    sub = g.node("Sub", [rs, g.init("/model/constants/INT64/1", np.array(1, np.int64))], base="/model/attn_mask_reformat/Sub")
    seqlens_k = g.node("Cast", [sub], base="/model/attn_mask_reformat/Cast", to=TensorProto.INT32)
    shp = g.node("Shape", ["attention_mask"], base="/model/attn_mask_reformat/Shape")
    tot = g.node("Gather", [shp, g.init("/model/constants/INT64/idx1", np.array(1, np.int64))], base="/model/attn_mask_reformat/Gather", axis=0)
    total_len = g.node("Cast", [tot], base="/model/attn_mask_reformat/Cast_total", to=TensorProto.INT32)

    if c["rope"] != "none":
        cos, sin = rope_cos_sin(c, np.arange(c["context"]))
        cos_cache, sin_cache = g.init("cos_cache", cast(cos)), g.init("sin_cache", cast(sin))

    E["embed"] = cast(W["embed"]).astype(np.float32)
    x = g.node("Gather", [g.init("model.embed_tokens.weight", cast(W["embed"])), "input_ids"], base="/model/embed_tokens/Gather", axis=0)
    if c["arch"] == "gpt2":
        E["wpe"] = cast(W["wpe"]).astype(np.float32)
        pe = g.node("Gather", [g.init("model.embed_positions.weight", cast(W["wpe"])), "position_ids"], base="/model/embed_positions/Gather", axis=0)
        x = g.node("Add", [x, pe], base="/model/embed/Add")

    def norm(inp, skip, gamma_name, gamma, beta, base):
        E[gamma_name] = cast(gamma).astype(np.float32)
        ins = [inp] + ([skip] if skip else []) + [g.init(base + ".weight", cast(gamma))]
        if c["norm"] == "layer":
            E[gamma_name + "b"] = cast(beta).astype(np.float32)
            ins.append(g.init(base + ".bias", cast(beta)))
            op = "SkipLayerNormalization" if skip else "LayerNormalization"
        else:
            op = "SkipSimplifiedLayerNormalization" if skip else "SimplifiedLayerNormalization"
        dom = "com.microsoft" if skip else ""
        if skip:
            outs = g.node(op, ins, n_out=4, domain=dom, base=base + "/" + op, epsilon=c["eps"])
            return outs[0], outs[3]
        return g.node(op, ins, domain=dom, base=base + "/" + op, axis=-1, epsilon=c["eps"]), None

    residual, pending = x, None
    for i in range(L):
        p, base = f"l{i}.", f"/model/layers.{i}"
        if pending is None:
            h, _ = norm(residual, None, p + "ln1", W[p + "ln1"], W.get(p + "ln1b"), base + "/input_layernorm")
        else:
            h, residual = norm(pending, residual, p + "ln1", W[p + "ln1"], W.get(p + "ln1b"), base + "/input_layernorm")
        if c["packed"]:
            wqkv = np.concatenate([W[p + "q"], W[p + "k"], W[p + "v"]], axis=0)
            bqkv = np.concatenate([W[p + "qb"], W[p + "kb"], W[p + "vb"]]) if c["qkv_bias"] else None
            qkv = linear(g, h, base + "/attn/qkv_proj", wqkv, bqkv, quant, asym, E)
            d = E.pop(base + "/attn/qkv_proj")
            E[p + "q"], E[p + "k"], E[p + "v"] = np.split(d, [nh * hd, (nh + kvh) * hd], axis=0)
            gqa_in = [qkv, "", ""]
        else:
            q = linear(g, h, base + "/attn/q_proj", W[p + "q"], W.get(p + "qb"), quant, asym, E)
            k = linear(g, h, base + "/attn/k_proj", W[p + "k"], W.get(p + "kb"), quant, asym, E)
            v = linear(g, h, base + "/attn/v_proj", W[p + "v"], W.get(p + "vb"), quant, asym, E)
            for s in "qkv":
                E[p + s] = E.pop(base + f"/attn/{s}_proj")
            if c["rope"] == "node":
                q = g.node("RotaryEmbedding", [q, "position_ids", cos_cache, sin_cache], domain="com.microsoft",
                           base=base + "/attn/q_rotary", interleaved=0, num_heads=nh)
                k = g.node("RotaryEmbedding", [k, "position_ids", cos_cache, sin_cache], domain="com.microsoft",
                           base=base + "/attn/k_rotary", interleaved=0, num_heads=kvh)
            gqa_in = [q, k, v]
        for s in ("qb", "kb", "vb"):
            if p + s in W:
                E[p + s] = cast(W[p + s]).astype(np.float32)
        gqa_in += [f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total_len]
        rotary = c["rope"] == "gqa"
        if rotary:
            gqa_in += [cos_cache, sin_cache]
        attn = g.node("GroupQueryAttention", gqa_in, domain="com.microsoft", base=base + "/attn/GroupQueryAttention",
                      outputs=[base + "/attn/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"],
                      num_heads=nh, kv_num_heads=kvh, scale=float(1.0 / np.sqrt(hd)), do_rotary=int(rotary),
                      rotary_interleaved=0, local_window_size=-1)[0]
        o = linear(g, attn, base + "/attn/o_proj", W[p + "o"], W.get(p + "ob"), quant, asym, E)
        E[p + "o"] = E.pop(base + "/attn/o_proj")
        if p + "ob" in W:
            E[p + "ob"] = cast(W[p + "ob"]).astype(np.float32)
        h, residual = norm(o, residual, p + "ln2", W[p + "ln2"], W.get(p + "ln2b"), base + "/post_attention_layernorm")
        if c["mlp"] == "gated":
            if c["packed"]:
                wgu = np.concatenate([W[p + "gate"], W[p + "up"]], axis=0)
                gu = linear(g, h, base + "/mlp/gate_up_proj", wgu, None, quant, asym, E)
                E[p + "gate"], E[p + "up"] = np.split(E.pop(base + "/mlp/gate_up_proj"), 2, axis=0)
                I = c["inter"]
                gate = g.node("Slice", [gu, g.init(base + "/mlp/s0", np.array([0], np.int64)),
                                        g.init(base + "/mlp/e0", np.array([I], np.int64)),
                                        g.init(base + "/mlp/ax", np.array([-1], np.int64))], base=base + "/mlp/gate/Slice")
                up = g.node("Slice", [gu, base + "/mlp/e0", g.init(base + "/mlp/e1", np.array([2 * I], np.int64)),
                                      base + "/mlp/ax"], base=base + "/mlp/up/Slice")
            else:
                gate = linear(g, h, base + "/mlp/gate_proj", W[p + "gate"], None, quant, asym, E)
                up = linear(g, h, base + "/mlp/up_proj", W[p + "up"], None, quant, asym, E)
                E[p + "gate"], E[p + "up"] = E.pop(base + "/mlp/gate_proj"), E.pop(base + "/mlp/up_proj")
            sig = g.node("Sigmoid", [gate], base=base + "/mlp/act_fn/Sigmoid")
            act = g.node("Mul", [gate, sig], base=base + "/mlp/act_fn/Mul")
            m = g.node("Mul", [act, up], base=base + "/mlp/Mul")
        else:
            up = linear(g, h, base + "/mlp/fc", W[p + "up"], None, quant, asym, E)
            E[p + "up"] = E.pop(base + "/mlp/fc")
            E[p + "upb"] = cast(W[p + "upb"]).astype(np.float32)
            m = g.node("FastGelu", [up, g.init(base + "/mlp/fc.bias", cast(W[p + "upb"]))], domain="com.microsoft",
                       base=base + "/mlp/FastGelu")
        pending = linear(g, m, base + "/mlp/down_proj", W[p + "down"], W.get(p + "downb"), quant, asym, E)
        E[p + "down"] = E.pop(base + "/mlp/down_proj")
        if p + "downb" in W:
            E[p + "downb"] = cast(W[p + "downb"]).astype(np.float32)
    h, _ = norm(pending, residual, "lnf", W["lnf"], W.get("lnfb"), "/model/norm")
    if c["arch"] == "gpt2":  # tied head: the embedding, transposed, as its own initializer (as the builder does)
        head = linear(g, h, "/lm_head", W["embed"], None, quant, asym, E)
    else:
        head = linear(g, h, "/lm_head", W["lm_head"], None, quant, asym, E)
    E["lm_head"] = E.pop("/lm_head")
    g.nodes.append(helper.make_node("Identity", [head], ["logits"], name="/lm_head/Identity"))

    graph = helper.make_graph(g.nodes, "main_graph", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="gpugrid make_decoders.py (model builder layout)")
    model.ir_version = 8
    return model, E


def genai_config(c, tok, precision, use_pos):
    sp = SPECIALS[c["arch"]]
    ids = lambda names: [tok.token_to_id(n) for n in names]
    eos = ids(sp["eos"])
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    if use_pos:
        inputs["position_ids"] = "position_ids"
    return {
        "model": {
            "bos_token_id": tok.token_to_id(sp["bos"]) if sp["bos"] else eos[-1],
            "context_length": c["context"],
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": c["head_dim"],
                "hidden_size": c["hidden"],
                "inputs": inputs,
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": c["heads"],
                "num_hidden_layers": c["layers"],
                "num_key_value_heads": c["kv_heads"],
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": eos[-1],
            # onnxruntime-genai's "gpt2" type is the legacy combined-past layout; a GPT-2 graph in
            # the builder's layout runs as its generic decoder ("llama").
            "type": "llama" if c["arch"] == "gpt2" else c["model_type"],
            "vocab_size": c["vocab"],
        },
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": c["context"], "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }


# ----------------------------------------------------------------------------- optimum export

def build_torch_module(c, W):
    import torch
    from torch import nn

    class decoder(nn.Module):
        def __init__(self, c, W, with_past):
            super().__init__()
            self.c, self.with_past = c, with_past
            self.params = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(torch.from_numpy(v.copy()), requires_grad=False)
                                            for k, v in W.items() if k != "lm_head" or c["arch"] != "gpt2"})
            if c["rope"] != "none":
                hd = c["head_dim"]
                inv = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
                self.register_buffer("inv_freq", torch.from_numpy(inv.astype(np.float32)))

        def w(self, k):
            return self.params[k.replace(".", "_")]

        def norm(self, x, k):
            if self.c["norm"] == "rms":
                var = x.pow(2).mean(-1, keepdim=True)
                return x * torch.rsqrt(var + self.c["eps"]) * self.w(k)
            return nn.functional.layer_norm(x, (self.c["hidden"],), self.w(k), self.w(k + "b"), self.c["eps"])

        def lin(self, x, k, b=None):
            y = torch.matmul(x, self.w(k).t())
            return y + self.w(b) if b else y

        def forward(self, input_ids, attention_mask, position_ids, *past):
            c = self.c
            B, S = input_ids.shape[0], input_ids.shape[1]
            nh, kvh, hd = c["heads"], c["kv_heads"], c["head_dim"]
            x = nn.functional.embedding(input_ids, self.w("embed"))
            if c["arch"] == "gpt2":
                x = x + nn.functional.embedding(position_ids, self.w("wpe"))
            past_len = past[0].shape[2] if self.with_past else 0
            total = attention_mask.shape[1]
            q_pos = torch.arange(S, device=x.device) + past_len
            k_pos = torch.arange(total, device=x.device)
            allowed = (k_pos[None, :] <= q_pos[:, None])[None, None] & (attention_mask[:, None, None, :] > 0)
            neg = torch.tensor(torch.finfo(torch.float32).min)
            if c["rope"] != "none":
                f = position_ids[..., None].float() * self.inv_freq
                cos, sin = torch.cos(f)[:, None], torch.sin(f)[:, None]

                def rope(t):
                    t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
                    return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)
            presents = []
            for i in range(c["layers"]):
                p = f"l{i}."
                h = self.norm(x, p + "ln1")
                bias = c["qkv_bias"]
                q = self.lin(h, p + "q", p + "qb" if bias else None).view(B, S, nh, hd).transpose(1, 2)
                k = self.lin(h, p + "k", p + "kb" if bias else None).view(B, S, kvh, hd).transpose(1, 2)
                v = self.lin(h, p + "v", p + "vb" if bias else None).view(B, S, kvh, hd).transpose(1, 2)
                if c["rope"] != "none":
                    q, k = rope(q), rope(k)
                if self.with_past:
                    k = torch.cat([past[2 * i], k], dim=2)
                    v = torch.cat([past[2 * i + 1], v], dim=2)
                presents += [k, v]
                rep = nh // kvh
                kk = k[:, :, None].expand(B, kvh, rep, total, hd).reshape(B, nh, total, hd)
                vv = v[:, :, None].expand(B, kvh, rep, total, hd).reshape(B, nh, total, hd)
                s = torch.matmul(q, kk.transpose(2, 3)) / float(np.sqrt(hd))
                s = torch.where(allowed, s, neg)
                a = torch.matmul(torch.softmax(s, dim=-1), vv).transpose(1, 2).reshape(B, S, nh * hd)
                x = x + self.lin(a, p + "o", p + "ob" if c["norm"] == "layer" else None)
                h = self.norm(x, p + "ln2")
                if c["mlp"] == "gated":
                    m = nn.functional.silu(self.lin(h, p + "gate")) * self.lin(h, p + "up")
                    x = x + self.lin(m, p + "down")
                else:
                    u = self.lin(h, p + "up", p + "upb")
                    u = 0.5 * u * (1.0 + torch.tanh(float(np.sqrt(2 / np.pi)) * (u + 0.044715 * u * u * u)))
                    x = x + self.lin(u, p + "down", p + "downb")
            x = self.norm(x, "lnf")
            logits = torch.matmul(x, self.w("embed" if c["arch"] == "gpt2" else "lm_head").t())
            return (logits, *presents)

    return decoder(c, W, True), decoder(c, W, False)


def export_optimum(c, W, path, with_past):
    import torch
    m_past, m_nopast = build_torch_module(c, W)
    m = m_past if with_past else m_nopast
    L, kvh, hd = c["layers"], c["kv_heads"], c["head_dim"]
    B, S, P = 1, 3, 2 if with_past else 0
    args = [torch.zeros(B, S, dtype=torch.int64), torch.ones(B, S + P, dtype=torch.int64),
            torch.arange(P, P + S, dtype=torch.int64)[None]]
    in_names = ["input_ids", "attention_mask", "position_ids"]
    dyn = {"input_ids": {0: "batch_size", 1: "sequence_length"},
           "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
           "position_ids": {0: "batch_size", 1: "sequence_length"},
           "logits": {0: "batch_size", 1: "sequence_length"}}
    out_names = ["logits"]
    for i in range(L):
        for kv in ("key", "value"):
            if with_past:
                args.append(torch.zeros(B, kvh, P, hd))
                in_names.append(f"past_key_values.{i}.{kv}")
                dyn[in_names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            out_names.append(f"present.{i}.{kv}")
            dyn[out_names[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    with torch.no_grad():
        torch.onnx.export(m, tuple(args), path, input_names=in_names, output_names=out_names, dynamic_axes=dyn,
                          opset_version=17, do_constant_folding=True)
    return onnx.load(path)


def to_branch(model, prefix, hoisted):
    """Graph -> If branch: initializers move to `hoisted` (deduplicated by content), every name the
    graph produces gets the prefix, inputs become outer-scope references."""
    g = model.graph
    rename = {}
    for t in g.initializer:
        data = numpy_helper.to_array(t)
        key = "w_" + hashlib.sha1(str(data.dtype).encode() + str(data.shape).encode() + data.tobytes()).hexdigest()[:20]
        rename[t.name] = key
        if key not in hoisted:
            hoisted[key] = numpy_helper.from_array(data, key)
    for n in g.node:
        for o in n.output:
            if o:
                rename[o] = prefix + o
    nodes = []
    for n in g.node:
        nn_ = onnx.NodeProto()
        nn_.CopyFrom(n)
        nn_.name = prefix + n.name
        for j, i in enumerate(nn_.input):
            nn_.input[j] = rename.get(i, i)
        for j, o in enumerate(nn_.output):
            nn_.output[j] = rename.get(o, o)
        nodes.append(nn_)
    outs = []
    for o in g.output:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(o)
        vi.name = rename.get(o.name, o.name)
        outs.append(vi)
    return helper.make_graph(nodes, prefix.strip("/") + "_graph", [], outs)


def merge_decoders(with_past, no_past):
    hoisted = {}
    then_g = to_branch(with_past, "/with_past", hoisted)
    else_g = to_branch(no_past, "/no_past", hoisted)
    inputs = list(with_past.graph.input) + [helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])]
    outputs = list(with_past.graph.output)
    if_node = helper.make_node("If", ["use_cache_branch"], [o.name for o in outputs], name="optimum::if",
                               then_branch=then_g, else_branch=else_g)
    graph = helper.make_graph([if_node], "merged_decoder", inputs, outputs, list(hoisted.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gpugrid make_decoders.py (optimum merged layout)")
    model.ir_version = 8
    return model


def to_fp16(model):
    """Every float tensor (weights, graph inputs/outputs, casts to float) to float16, as
    onnxconverter-common's convert_float_to_float16(keep_io_types=False) does."""
    def fix_graph(g):
        for t in list(g.initializer):
            if t.data_type == TensorProto.FLOAT:
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
                vi.type.tensor_type.elem_type = TensorProto.FLOAT16
        for n in g.node:
            for a in n.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
                if a.type == onnx.AttributeProto.GRAPH:
                    fix_graph(a.g)
    fix_graph(model.graph)
    return model


def quantize_matmuls(model, asym):
    """MatMul nodes whose B is a 2-D float initializer -> MatMulNBits (4 bits, blocks of 32,
    accuracy_level 4), as onnxruntime's MatMulNBitsQuantizer rewrites an exported model."""
    keep = []  # new initializers, all in the main graph (branches see them from the outer scope)

    def fix_graph(g, inits):
        new_nodes = []
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    fix_graph(a.g, inits)
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 and \
                    inits[n.input[1]].dims[0] % BLOCK == 0:
                wt = numpy_helper.to_array(inits[n.input[1]]).T  # [N, K]
                packed, scales, zp, _ = quantize_int4(wt, asym)
                b = n.input[1]
                new = [numpy_helper.from_array(packed, b + "_Q4"), numpy_helper.from_array(scales, b + "_scales")]
                ins = [n.input[0], b + "_Q4", b + "_scales"]
                if zp is not None:
                    new.append(numpy_helper.from_array(zp, b + "_zp"))
                    ins.append(b + "_zp")
                for t in new:
                    if t.name not in inits:
                        inits[t.name] = t
                        keep.append(t)
                new_nodes.append(helper.make_node("MatMulNBits", ins, list(n.output), name=n.name + "_Q4", domain="com.microsoft",
                                                  K=wt.shape[1], N=wt.shape[0], bits=4, block_size=BLOCK, accuracy_level=4))
            else:
                new_nodes.append(n)
        del g.node[:]
        g.node.extend(new_nodes)
    inits = {t.name: t for t in model.graph.initializer}
    fix_graph(model.graph, inits)
    model.graph.initializer.extend(keep)
    used = set()

    def collect(g):
        for n in g.node:
            used.update(n.input)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)
    collect(model.graph)
    live = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def effective_weights(W, precision, asym):
    """The weights as a converted optimum graph holds them (for the reference)."""
    if precision == "fp32":
        return W
    E = {}
    for k, v in W.items():
        if precision == "fp16":
            E[k] = v.astype(np.float16).astype(np.float32)
        elif v.ndim == 2 and k not in ("embed", "wpe") and v.shape[1] % BLOCK == 0:
            E[k] = quantize_int4(v, asym)[3]
        else:
            E[k] = v
    if "lm_head" in W and W["lm_head"] is W["embed"] and precision == "int4":
        E["lm_head"] = quantize_int4(W["embed"], asym)[3]
        E["embed"] = W["embed"]
    return E


def hf_config(c, tok):
    sp = SPECIALS[c["arch"]]
    eos = [tok.token_to_id(n) for n in sp["eos"]]
    bos = tok.token_to_id(sp["bos"]) if sp["bos"] else None
    if c["arch"] == "gpt2":
        cfg = {"architectures": [c["hf_type"]], "model_type": "gpt2", "n_embd": c["hidden"], "n_layer": c["layers"],
               "n_head": c["heads"], "n_inner": c["inter"], "n_positions": c["context"], "n_ctx": c["context"],
               "vocab_size": c["vocab"], "activation_function": "gelu_new", "layer_norm_epsilon": c["eps"],
               "bos_token_id": bos, "eos_token_id": eos[0], "tie_word_embeddings": True}
    else:
        cfg = {"architectures": [c["hf_type"]], "model_type": c["model_type"], "hidden_size": c["hidden"],
               "intermediate_size": c["inter"], "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
               "num_key_value_heads": c["kv_heads"], "head_dim": c["head_dim"], "max_position_embeddings": c["context"],
               "rms_norm_eps": c["eps"], "rope_theta": c["rope_theta"], "vocab_size": c["vocab"], "hidden_act": "silu",
               "tie_word_embeddings": False, "bos_token_id": bos, "eos_token_id": eos if len(eos) > 1 else eos[0],
               "use_cache": True, "torch_dtype": "float32"}
    gen = {"bos_token_id": bos, "eos_token_id": eos if len(eos) > 1 else eos[0], "do_sample": False,
           "max_length": c["context"]}
    return cfg, gen


# ----------------------------------------------------------------------------- checks

def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_graph(folder, fmt, c, E, merged, precision):
    """Prefill of a 7-token prompt, then one decode step with the cache: logits against the numpy
    reference, and the present shapes."""
    fname = "decoder_model_merged.onnx" if merged else "model.onnx"
    sess = ort_session(os.path.join(folder, fname))
    names = {i.name for i in sess.get_inputs()}
    np_io = np.float16 if precision == "fp16" else np.float32
    rng = np.random.default_rng(7)
    ids = rng.integers(0, c["vocab"], size=8).astype(np.int64)
    P = 7
    ref = reference_logits(c, E, ids)
    L, kvh, hd = c["layers"], c["kv_heads"], c["head_dim"]

    def run(tok, past, past_len):
        S = len(tok)
        feed = {"input_ids": tok[None], "attention_mask": np.ones((1, past_len + S), np.int64)}
        if "position_ids" in names:
            feed["position_ids"] = np.arange(past_len, past_len + S, dtype=np.int64)[None]
        if "use_cache_branch" in names:
            feed["use_cache_branch"] = np.array([past_len > 0])
        for i in range(L):
            for j, kv in enumerate(("key", "value")):
                feed[f"past_key_values.{i}.{kv}"] = past[2 * i + j] if past else np.zeros((1, kvh, 0, hd), np_io)
        return sess.run(None, feed)

    out = run(ids[:P], None, 0)
    logits, presents = out[0], out[1:]
    out2 = run(ids[P:], presents, P)
    got = np.concatenate([logits[0], out2[0][0]], axis=0).astype(np.float64)
    tol = {"fp32": 2e-3, "fp16": 3e-2, "int4": 2e-2}[precision] * max(1.0, np.abs(ref).max())
    err = np.abs(got - ref).max()
    shapes_ok = out2[1].shape == (1, kvh, P + 1, hd)
    print(f"check {fname}: prefill {P} + decode 1, max |logit - reference| = {err:.2e} (tolerance {tol:.1e}), "
          f"present {out2[1].shape}")
    if err > tol or not shapes_ok or not np.isfinite(got).all():
        print("make_decoders: check FAILED", file=sys.stderr)
        sys.exit(1)


def check_genai(folder):
    import onnxruntime_genai as og
    model = og.Model(folder)
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode("Hello world, this is a test.")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 8, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    n = 0
    while not gen.is_done() and n < 8:
        gen.generate_next_token()
        n += 1
    seq = list(gen.get_sequence(0))
    print(f"check genai: {len(ids)} prompt tokens, generated {seq[len(ids):]!r}")
    if n == 0:
        print("make_decoders: genai check FAILED (nothing generated)", file=sys.stderr)
        sys.exit(1)


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", required=True, choices=sorted(ARCH))
    ap.add_argument("--format", required=True, choices=["genai", "optimum"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int4"])
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
    ap.add_argument("--merged", action="store_true", help="optimum: also decoder_model_merged.onnx (If on use_cache_branch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--int4-asym", action="store_true", help="int4 with zero points (default: symmetric, as the builder)")
    ap.add_argument("--check", action="store_true", help="run the folder and compare against the numpy reference")
    a = ap.parse_args()
    if a.merged and a.format != "optimum":
        fail("--merged is for --format optimum")
    os.makedirs(a.out, exist_ok=True)

    tok = make_tokenizer(a.arch)
    c = make_config(a.arch, a.size, tok.get_vocab_size())
    W = make_weights(c, a.seed)
    write_tokenizer(a.out, a.arch, tok, c["context"])

    if a.format == "genai":
        model, E = build_genai(c, W, a.precision, a.int4_asym)
        onnx.save(model, os.path.join(a.out, "model.onnx"))
        use_pos = any(i.name == "position_ids" for i in model.graph.input)
        with open(os.path.join(a.out, "genai_config.json"), "w") as f:
            json.dump(genai_config(c, tok, a.precision, use_pos), f, indent=4)
        del model
    else:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            m = export_optimum(c, W, os.path.join(tmp, "past.onnx"), True)
            no_past = export_optimum(c, W, os.path.join(tmp, "nopast.onnx"), False) if a.merged else None
        models = [("model.onnx", m)]
        if a.merged:
            models.append(("decoder_model_merged.onnx", merge_decoders(m, no_past)))
        for fname, mm in models:
            if a.precision == "fp16":
                mm = to_fp16(mm)
            elif a.precision == "int4":
                mm = quantize_matmuls(mm, a.int4_asym)
            onnx.save(mm, os.path.join(a.out, fname))
        E = effective_weights(W, a.precision, a.int4_asym)
        cfg, gen = hf_config(c, tok)
        with open(os.path.join(a.out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(a.out, "generation_config.json"), "w") as f:
            json.dump(gen, f, indent=2)
    n_params = sum(v.size for k, v in W.items() if not (k == "lm_head" and c["arch"] == "gpt2"))
    print(f"wrote {a.out}: {a.arch} {a.format} {a.precision} {a.size} ({n_params / 1e6:.1f}M parameters, "
          f"vocab {c['vocab']}, {c['layers']} layers, hidden {c['hidden']})")
    if a.check:
        check_graph(a.out, a.format, c, E, False, a.precision)
        if a.merged:
            check_graph(a.out, a.format, c, E, True, a.precision)
        if a.format == "genai":
            check_genai(a.out)


if __name__ == "__main__":
    main()
