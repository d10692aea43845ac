#!/usr/bin/env python3
"""Writes tiny Llama-style decoders with random weights, for generation tests, in the two folder
layouts gpugrid reads, with the same weights and a small byte-level BPE tokenizer:

  OUT/genai     onnxruntime-genai builder layout: genai_config.json, model.onnx with
                GroupQueryAttention (rotary inside, past_present_share_buffer), tokenizer files
  OUT/optimum   optimum layout: config.json, generation_config.json, model.onnx with
                input_ids/attention_mask/position_ids/past_key_values.* -> logits/present.*
                built from plain ONNX ops, tokenizer files
  OUT/merged    optimum's decoder_model_merged.onnx: the same decoder behind an If on
                use_cache_branch (both branches the same graph, as a merged export computes)

Nothing is downloaded. Usage: make_tiny_decoder.py OUT_DIR [--seed N]
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

D, N, NKV, H, FF, LAYERS, CTX = 64, 4, 2, 16, 128, 2, 128
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Hello world, how are you today?",
    "Once upon a time there was a tiny model that generated text one token at a time.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: ; , . ! ?", "Caf\u00e9, na\u00efve, \u00fcber, \u65e5\u672c",
    "def main():\n    print('hi')\n", "user assistant system say something nice",
]


def tokenizer_json(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.save(path)
    return tok.get_vocab_size()


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


class Builder:
    def __init__(self, rng, vocab):
        self.nodes, self.inits, self.n = [], [], 0
        self.rng, self.vocab = rng, vocab

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def op(self, op_type, inputs, n_out=1, domain="", **attrs):
        outs = [self.name(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name("n_" + op_type), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, arr, base="c"):
        nm = self.name(base)
        self.inits.append(init(nm, arr))
        return nm


def weights(rng, vocab):
    w = {"embed": rng.standard_normal((vocab, D)).astype(np.float32) * 0.5,
         "lm_head": rng.standard_normal((D, vocab)).astype(np.float32) * 0.5,
         "norm": (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)}
    for l in range(LAYERS):
        s = 1 / np.sqrt(D)
        w[f"{l}.q"] = rng.standard_normal((D, N * H)).astype(np.float32) * s
        w[f"{l}.k"] = rng.standard_normal((D, NKV * H)).astype(np.float32) * s
        w[f"{l}.v"] = rng.standard_normal((D, NKV * H)).astype(np.float32) * s
        w[f"{l}.o"] = rng.standard_normal((N * H, D)).astype(np.float32) * s
        w[f"{l}.gate"] = rng.standard_normal((D, FF)).astype(np.float32) * s
        w[f"{l}.up"] = rng.standard_normal((D, FF)).astype(np.float32) * s
        w[f"{l}.down"] = rng.standard_normal((FF, D)).astype(np.float32) / np.sqrt(FF)
        w[f"{l}.ln1"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        w[f"{l}.ln2"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
    inv = 1.0 / (10000 ** (np.arange(0, H, 2, dtype=np.float64) / H))
    ang = np.outer(np.arange(CTX, dtype=np.float64), inv)
    w["cos"], w["sin"] = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    return w


def rms_norm(b, x, weight):
    sq = b.op("Mul", [x, x])
    mean = b.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    eps = b.op("Add", [mean, b.const(np.float32(1e-5))])
    return b.op("Mul", [b.op("Div", [x, b.op("Sqrt", [eps])]), weight])


def mlp(b, x, l):
    g = b.op("MatMul", [x, f"w.{l}.gate"])
    u = b.op("MatMul", [x, f"w.{l}.up"])
    return b.op("MatMul", [b.op("Mul", [b.op("Mul", [g, b.op("Sigmoid", [g])]), u]), f"w.{l}.down"])


def rope(b, x, cos, sin):
    # x [B, heads, S, H]; cos/sin [B, 1, S, H/2]; rotate_half (not interleaved), as GQA does.
    x1, x2 = b.op("Split", [x, b.const(np.array([H // 2, H // 2], np.int64))], n_out=2, axis=-1)
    a = b.op("Sub", [b.op("Mul", [x1, cos]), b.op("Mul", [x2, sin])])
    c = b.op("Add", [b.op("Mul", [x2, cos]), b.op("Mul", [x1, sin])])
    return b.op("Concat", [a, c], axis=-1)


def heads(b, x, n):  # [B, S, n*H] -> [B, n, S, H]
    r = b.op("Reshape", [x, b.const(np.array([0, 0, n, H], np.int64))])
    return b.op("Transpose", [r], perm=[0, 2, 1, 3])


def body_plain(b):
    """The optimum-style decoder body; returns (inputs, outputs) value infos."""
    x = b.op("Gather", ["w.embed", "input_ids"])
    pos = b.op("Unsqueeze", ["position_ids", b.const(np.array([1], np.int64))])  # [B,1,S]
    cos = b.op("Gather", ["w.cos", pos])  # [B,1,S,H/2]
    sin = b.op("Gather", ["w.sin", pos])
    # mask bias [B, 1, S, T]: key j visible to query i when j <= P + i and attention_mask[b, j]
    shp_ids = b.op("Shape", ["input_ids"])
    S = b.op("Gather", [shp_ids, b.const(np.array(1, np.int64))])
    T = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(np.array(1, np.int64))])
    P = b.op("Sub", [T, S])
    kj = b.op("Range", [b.const(np.array(0, np.int64)), T, b.const(np.array(1, np.int64))])
    qi = b.op("Range", [P, T, b.const(np.array(1, np.int64))])
    qi2 = b.op("Unsqueeze", [qi, b.const(np.array([1], np.int64))])
    causal = b.op("LessOrEqual", [kj, qi2])  # [S, T]
    m = b.op("Cast", ["attention_mask"], to=TensorProto.BOOL)
    m4 = b.op("Unsqueeze", [m, b.const(np.array([1, 2], np.int64))])  # [B,1,1,T]
    allowed = b.op("And", [causal, m4])
    bias = b.op("Where", [allowed, b.const(np.float32(0)), b.const(np.float32(-1e9))])
    for l in range(LAYERS):
        h = rms_norm(b, x, f"w.{l}.ln1")
        q = rope(b, heads(b, b.op("MatMul", [h, f"w.{l}.q"]), N), cos, sin)
        k = rope(b, heads(b, b.op("MatMul", [h, f"w.{l}.k"]), NKV), cos, sin)
        v = heads(b, b.op("MatMul", [h, f"w.{l}.v"]), NKV)
        pk = b.op("Concat", [f"past_key_values.{l}.key", k], axis=2)
        pv = b.op("Concat", [f"past_key_values.{l}.value", v], axis=2)
        b.nodes.append(helper.make_node("Identity", [pk], [f"present.{l}.key"]))
        b.nodes.append(helper.make_node("Identity", [pv], [f"present.{l}.value"]))
        rep = b.const(np.array([1, 1, N // NKV, 1, 1], np.int64))
        kr = b.op("Reshape", [b.op("Expand", [b.op("Unsqueeze", [pk, b.const(np.array([2], np.int64))]), rep]),
                              b.const(np.array([0, N, -1, H], np.int64))])
        vr = b.op("Reshape", [b.op("Expand", [b.op("Unsqueeze", [pv, b.const(np.array([2], np.int64))]), rep]),
                              b.const(np.array([0, N, -1, H], np.int64))])
        sc = b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [kr], perm=[0, 1, 3, 2])]),
                          b.const(np.float32(1 / np.sqrt(H)))])
        att = b.op("MatMul", [b.op("Softmax", [b.op("Add", [sc, bias])], axis=-1), vr])
        o = b.op("Reshape", [b.op("Transpose", [att], perm=[0, 2, 1, 3]), b.const(np.array([0, 0, N * H], np.int64))])
        x = b.op("Add", [x, b.op("MatMul", [o, f"w.{l}.o"])])
        x = b.op("Add", [x, mlp(b, rms_norm(b, x, f"w.{l}.ln2"), l)])
    b.nodes.append(helper.make_node("MatMul", [rms_norm(b, x, "w.norm"), "w.lm_head"], ["logits"]))


def body_gqa(b):
    x = b.op("Gather", ["w.embed", "input_ids"])
    red = b.op("ReduceSum", ["attention_mask", b.const(np.array([1], np.int64))], keepdims=0)
    seqlens = b.op("Cast", [b.op("Sub", [red, b.const(np.array(1, np.int64))])], to=TensorProto.INT32)
    tot = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(np.array(1, np.int64))])
    total = b.op("Cast", [tot], to=TensorProto.INT32)
    for l in range(LAYERS):
        h = rms_norm(b, x, f"w.{l}.ln1")
        q = b.op("MatMul", [h, f"w.{l}.q"])
        k = b.op("MatMul", [h, f"w.{l}.k"])
        v = b.op("MatMul", [h, f"w.{l}.v"])
        b.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{l}.key", f"past_key_values.{l}.value", seqlens, total, "w.cos", "w.sin"],
            [f"attn_{l}", f"present.{l}.key", f"present.{l}.value"], name=f"gqa_{l}", domain="com.microsoft",
            num_heads=N, kv_num_heads=NKV, do_rotary=1, rotary_interleaved=0))
        x = b.op("Add", [x, b.op("MatMul", [f"attn_{l}", f"w.{l}.o"])])
        x = b.op("Add", [x, mlp(b, rms_norm(b, x, f"w.{l}.ln2"), l)])
    b.nodes.append(helper.make_node("MatMul", [rms_norm(b, x, "w.norm"), "w.lm_head"], ["logits"]))


def io_infos(vocab, with_positions, cache_dim):
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"])]
    if with_positions:
        ins.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]))
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])]
    for l in range(LAYERS):
        for kind in ("key", "value"):
            ins.append(helper.make_tensor_value_info(f"past_key_values.{l}.{kind}", TensorProto.FLOAT,
                                                     ["batch", NKV, cache_dim, H]))
            outs.append(helper.make_tensor_value_info(f"present.{l}.{kind}", TensorProto.FLOAT,
                                                      ["batch", NKV, "total_cache", H]))
    return ins, outs


def save(nodes, inits, ins, outs, path, ms=False):
    g = helper.make_graph(nodes, "tiny_decoder", ins, outs, inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    m = helper.make_model(g, opset_imports=opsets, producer_name="make_tiny_decoder")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


def tok_files(d, vocab):
    tokenizer_json(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False, "chat_template": CHATML,
                   "tokenizer_class": "GPT2Tokenizer", "model_max_length": CTX}, f, indent=1)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 7
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "tokenizer.json")
    vocab = tokenizer_json(tmp)
    os.remove(tmp)
    w = weights(np.random.default_rng(seed), vocab)
    eos = [2, 0]  # <|im_end|>, <|endoftext|>

    def wb():
        b = Builder(None, vocab)
        b.inits = [init("w." + k, v) for k, v in w.items()]
        return b

    # genai
    d = os.path.join(out, "genai")
    os.makedirs(d, exist_ok=True)
    b = wb()
    body_gqa(b)
    ins, outs = io_infos(vocab, False, "past_sequence")
    save(b.nodes, b.inits, ins, outs, os.path.join(d, "model.onnx"), ms=True)
    tok_files(d, vocab)
    cfg = {"model": {"bos_token_id": 0, "context_length": CTX, "decoder": {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []}, "filename": "model.onnx",
        "head_size": H, "hidden_size": D,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                   "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"},
        "num_attention_heads": N, "num_hidden_layers": LAYERS, "num_key_value_heads": NKV},
        "eos_token_id": eos, "pad_token_id": 0, "type": "llama", "vocab_size": vocab},
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": CTX, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0}}
    with open(os.path.join(d, "genai_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)

    # optimum (model.onnx) and merged (decoder_model_merged.onnx with If)
    ocfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D, "num_attention_heads": N,
            "num_key_value_heads": NKV, "num_hidden_layers": LAYERS, "intermediate_size": FF,
            "max_position_embeddings": CTX, "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": eos,
            "pad_token_id": 0, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
    gcfg = {"bos_token_id": 0, "eos_token_id": eos, "pad_token_id": 0, "do_sample": False}
    for kind in ("optimum", "merged"):
        d = os.path.join(out, kind)
        os.makedirs(d, exist_ok=True)
        b = wb()
        ins, outs = io_infos(vocab, True, "past_sequence")
        if kind == "optimum":
            body_plain(b)
            save(b.nodes, b.inits, ins, outs, os.path.join(d, "model.onnx"))
        else:
            branches = []
            for br in ("with_past", "no_past"):
                bb = Builder(None, vocab)
                bb.n = 10000 if br == "with_past" else 20000
                body_plain(bb)
                # subgraph outputs: same names must be unique per branch
                ren = {o.name: f"{br}_{o.name}" for o in outs}
                for nd in bb.nodes:
                    for i, o in enumerate(nd.output):
                        if o in ren:
                            nd.output[i] = ren[o]
                souts = [helper.make_tensor_value_info(ren[o.name], TensorProto.FLOAT, None) for o in outs]
                branches.append(helper.make_graph(bb.nodes, br, [], souts, bb.inits))
            ins.append(helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]))
            cond = helper.make_node("Squeeze", ["use_cache_branch"], ["cond"])
            iff = helper.make_node("If", ["cond"], [o.name for o in outs], then_branch=branches[0],
                                   else_branch=branches[1])
            inits = [init("w." + k, v) for k, v in w.items()]
            save([cond, iff], inits, ins, outs, os.path.join(d, "decoder_model_merged.onnx"))
        tok_files(d, vocab)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(ocfg, f, indent=1)
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump(gcfg, f, indent=1)
    print(out)


if __name__ == "__main__":
    main()
