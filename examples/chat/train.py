#!/usr/bin/env python3
"""Trains the bundled chat model and rewrites its committed files.

Corpus: the King James Version of the Bible (1611, public domain), as Debian's bible-kjv-text
package ships it, read out with that package's own `bible` program (`bible -f Gen1:1-Rev22:21`:
one verse a line, 31,102 verses, 4.4 MB of ASCII). Nothing is downloaded.

Chat data: the verses, in order, are cut into short ChatML conversations (one to four
exchanges; now and then a system message first). In each exchange the user says a verse and
the assistant answers with the next one, or the user asks for a verse about a word (the
assistant's verse contains it), asks to continue a half verse, or asks for a verse by its
reference. So the model learns the turn-taking and to answer in KJV prose; it does not learn
to know which verse is which (it is far too small to memorise the text).

Tokenizer: byte-level BPE (GPT-2's pre-tokenizer), 4,096 tokens, trained with the `tokenizers`
package on the same conversations; special tokens <|endoftext|> (0), <|im_start|> (1) and
<|im_end|> (2, the end of a turn and so the EOS).

Model: a Llama-style decoder (RMSNorm, rotary position embeddings, SwiGLU MLP, multi-head
attention without biases, tied input and output embeddings): 4 layers, width 128, 4 heads of
32, MLP 352, context 512 tokens; 1.33M parameters. Trained with AdamW on one CPU thread,
fixed seed and fixed step count.

Writes beside this file (optimum's layout for a decoder with a KV cache):
  model.onnx              inputs input_ids, attention_mask, position_ids,
                          past_key_values.N.key/value; outputs logits, present.N.key/value
  config.json             model_type llama, sizes, BOS/EOS ids, max_position_embeddings
  generation_config.json  default sampling settings
  tokenizer.json, tokenizer_config.json (with the ChatML chat_template), special_tokens_map.json
  expected_greedy.json    onnxruntime's greedy answers to a few prompts (tests/chat_example_test.sh)
Then checks the export: onnxruntime's greedy decoding with the KV cache gives the same tokens
as torch's (recomputing the whole sequence each step) for a few prompts, and prints a few
sample answers.

Run with the project's test environment (torch, numpy, onnx from Debian; tokenizers, jinja2,
onnxruntime from scripts/requirements-test.txt):
  .venv/bin/python examples/chat/train.py                 # the committed model (53 min on a busy core)
  .venv/bin/python examples/chat/train.py --steps 5 --out /tmp/chat   # a quick smoke run
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
OPSET = 17

# Model and training settings (config.json says the same).
VOCAB = 4096
WIDTH = 128
LAYERS = 4
HEADS = 4
HEAD_DIM = WIDTH // HEADS
MLP = 352
CONTEXT = 512
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
STEPS = 240
BATCH = 8
LR = 3e-3
WARMUP = 20

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ENDOFTEXT, IM_START, IM_END = 0, 1, 2
STOP_IDS = (IM_END, ENDOFTEXT)  # generation_config.json's eos_token_id

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
    "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah",
    "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians",
    "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians", "2 Thessalonians",
    "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James", "1 Peter", "2 Peter",
    "1 John", "2 John", "3 John", "Jude", "Revelation"]

STOPWORDS = set("""
and the that shall unto with they them their thee thou thy thine have hath which said were from
this there upon will when then also into because before after shalt even came come these those
what about against over under every they said saith been being made make unto your yours ours
according whom where wherefore therefore also went more than other among through should would
could nor not but for all any him his her hers she are was had did doth dost art let may might
neither either shall whose why how now out off own same such very just only each most some
""".split())

SYSTEMS = ["You are a reader of the King James Bible.",
           "Answer in the words of the King James Bible.",
           "You speak only in verses."]


# ---------------------------------------------------------------------------------------------
# Corpus and conversations

def read_kjv():
    """[(book, chapter, verse, text)] from the bible-kjv package's own reader."""
    exe = shutil.which("bible")
    if exe is None:
        sys.exit("train.py: no `bible` program: install Debian's bible-kjv and bible-kjv-text")
    out = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                         text=True, cwd="/").stdout
    verses, abbrevs = [], []
    pattern = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
    for line in out.splitlines():
        m = pattern.match(line)
        if not m:
            sys.exit(f"train.py: unexpected line from bible: {line[:60]!r}")
        abbrev, chapter, verse, text = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4).strip()
        if not abbrevs or abbrevs[-1] != abbrev:
            abbrevs.append(abbrev)
        verses.append((len(abbrevs) - 1, chapter, verse, text))
    if len(abbrevs) != len(BOOKS) or len(verses) != 31102:
        sys.exit(f"train.py: expected 66 books and 31102 verses, got {len(abbrevs)} and {len(verses)}")
    return [(BOOKS[b], c, v, t) for b, c, v, t in verses]


def topic_word(text, rng):
    words = text.split()
    candidates = []
    for i, w in enumerate(words):
        w = w.strip(",.;:?!()'")
        if len(w) < 4 or not w.isalpha() or w.lower() in STOPWORDS:
            continue
        candidates.append(w.lower() if i == 0 or w.isupper() and w != "LORD" else w)
    return rng.choice(candidates) if candidates else None


def make_conversations(verses, rng):
    """Cuts the verses, in order, into ChatML conversations: [[{"role", "content"}]]."""
    convs, i, n = [], 0, len(verses)
    while i < n:
        msgs = []
        if rng.random() < 0.15:
            msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
        for _ in range(rng.choice([1, 2, 2, 3, 3, 4])):
            if i >= n:
                break
            book, c, v, text = verses[i]
            kind = rng.choices(["next", "about", "continue", "read"], [0.4, 0.3, 0.15, 0.15])[0]
            word = topic_word(text, rng) if kind == "about" else None
            if kind == "next" and i + 1 < n:
                user, answer, i = text, verses[i + 1][3], i + 2
            elif kind == "about" and word:
                ask = rng.choice(["Give me a verse about {}.", "What does the Bible say about {}?",
                                  "Tell me about {}."])
                user, answer, i = ask.format(word), text, i + 1
            elif kind == "continue" and len(text.split()) >= 8:
                words = text.split()
                cut = rng.randint(3, len(words) // 2 + 1)
                user, answer, i = "Continue: " + " ".join(words[:cut]), " ".join(words[cut:]), i + 1
            else:
                ask = rng.choice(["Read me {} {}:{}.", "What is {} {}:{}?", "{} {}:{}"])
                user, answer, i = ask.format(book, c, v), text, i + 1
            msgs.append({"role": "user", "content": user})
            msgs.append({"role": "assistant", "content": answer})
        convs.append(msgs)
    return convs


def render(messages, add_generation_prompt=False):
    """CHAT_TEMPLATE, rendered in Python (checked against jinja2 in main)."""
    s = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return s + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def train_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, s
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


# ---------------------------------------------------------------------------------------------
# The model

class RMSNorm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * self.weight


def rotate_half(x):
    x1, x2 = x[..., :HEAD_DIM // 2], x[..., HEAD_DIM // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = RMSNorm(WIDTH)
        self.q_proj = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        self.k_proj = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        self.v_proj = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        self.o_proj = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        self.post_attention_layernorm = RMSNorm(WIDTH)
        self.gate_proj = torch.nn.Linear(WIDTH, MLP, bias=False)
        self.up_proj = torch.nn.Linear(WIDTH, MLP, bias=False)
        self.down_proj = torch.nn.Linear(MLP, WIDTH, bias=False)

    def forward(self, x, cos, sin, keep, past_k, past_v):
        b, s, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, s, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(h).view(b, s, HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v_proj(h).view(b, s, HEADS, HEAD_DIM).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(HEAD_DIM))
        scores = scores.masked_fill(~keep, torch.finfo(torch.float32).min)
        attn = torch.matmul(torch.softmax(scores, dim=-1), v)
        x = x + self.o_proj(attn.transpose(1, 2).reshape(b, s, WIDTH))
        h = self.post_attention_layernorm(x)
        x = x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        return x, k, v


class ChatModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(VOCAB, WIDTH)
        self.layers = torch.nn.ModuleList([Layer() for _ in range(LAYERS)])
        self.norm = RMSNorm(WIDTH)
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                torch.nn.init.normal_(p, std=std)

    def forward(self, input_ids, attention_mask, position_ids, past):
        """past: [(key, value)] per layer, each [batch, heads, past_len, head_dim].
        Returns logits [batch, seq, vocab] and the presents, [(key, value)] with past_len + seq."""
        b, s = input_ids.shape
        p = past[0][0].shape[2]
        x = self.embed_tokens(input_ids)
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # [b, 1, s, head_dim]
        cos, sin = emb.cos(), emb.sin()
        kpos = torch.arange(p + s, device=input_ids.device)
        qpos = torch.arange(s, device=input_ids.device) + p
        causal = kpos.unsqueeze(0) <= qpos.unsqueeze(1)  # [s, p + s]
        keep = causal.unsqueeze(0).unsqueeze(0) & attention_mask.bool().unsqueeze(1).unsqueeze(2)
        presents = []
        for layer, (pk, pv) in zip(self.layers, past):
            x, k, v = layer(x, cos, sin, keep, pk, pv)
            presents.append((k, v))
        logits = F.linear(self.norm(x), self.embed_tokens.weight)
        return logits, presents

    def empty_past(self, batch):
        z = torch.zeros(batch, HEADS, 0, HEAD_DIM)
        return [(z, z) for _ in range(LAYERS)]

    def full(self, ids):
        """Logits for whole sequences, no cache (training and the reference decoding)."""
        b, s = ids.shape
        pos = torch.arange(s).unsqueeze(0).expand(b, s)
        return self(ids, torch.ones_like(ids), pos, self.empty_past(b))[0]


class OnnxDecoder(torch.nn.Module):
    """The flat signature of optimum's decoder export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *flat_past):
        past = [(flat_past[2 * i], flat_past[2 * i + 1]) for i in range(LAYERS)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        return (logits,) + tuple(t for kv in presents for t in kv)


# ---------------------------------------------------------------------------------------------
# Training

def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batches_from(stream, starts, gen, batch):
    idx = torch.randint(0, len(starts), (batch,), generator=gen)
    return torch.stack([stream[starts[i]:starts[i] + CONTEXT + 1] for i in idx.tolist()])


def train(model, stream, starts, val_stream, val_starts, steps):
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        xy = batches_from(stream, starts, gen, BATCH)
        logits = model.full(xy[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), xy[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            el = time.time() - t0
            print(f"step {step + 1}/{steps}  loss {loss.item():.3f}  {el:.0f} s  "
                  f"{(step + 1) * BATCH * CONTEXT / el:.0f} tokens/s", flush=True)
    model.eval()
    elapsed = time.time() - t0
    vgen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        losses = []
        for _ in range(4):
            xy = batches_from(val_stream, val_starts, vgen, BATCH)
            logits = model.full(xy[:, :-1])
            losses.append(F.cross_entropy(logits.reshape(-1, VOCAB), xy[:, 1:].reshape(-1)).item())
    return elapsed, sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------------
# Export and its check

def export(model, out):
    path = os.path.join(out, "model.onnx")
    b, s, p = 1, 3, 2
    ids = torch.randint(3, VOCAB, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.int64)
    pos = torch.arange(p, p + s).unsqueeze(0)
    past = [torch.randn(b, HEADS, p, HEAD_DIM) for _ in range(2 * LAYERS)]
    past_names = [f"past_key_values.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    for n in past_names:
        axes[n] = {0: "batch_size", 2: "past_sequence_length"}
    for n in present_names:
        axes[n] = {0: "batch_size", 2: "total_sequence_length"}
    with torch.no_grad():
        torch.onnx.export(OnnxDecoder(model), (ids, mask, pos, *past), path, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask", "position_ids"] + past_names,
                          output_names=["logits"] + present_names, dynamic_axes=axes,
                          do_constant_folding=True)
    share_tied_embedding(path, model)
    return path


def share_tied_embedding(path, model):
    """Constant folding stores the output projection as a transposed copy of the embedding;
    keep one copy (a Transpose of the embedding initializer) so the file is 2 MB smaller."""
    import onnx
    from onnx import helper, numpy_helper
    m = onnx.load(path)
    emb = model.embed_tokens.weight.detach().numpy()
    inits = {t.name: t for t in m.graph.initializer}
    emb_name = next(n for n, t in inits.items() if tuple(t.dims) == emb.shape and
                    np.array_equal(numpy_helper.to_array(t), emb))
    for n, t in list(inits.items()):
        if tuple(t.dims) == emb.shape[::-1] and np.array_equal(numpy_helper.to_array(t), emb.T):
            m.graph.initializer.remove(t)
            node = helper.make_node("Transpose", [emb_name], [n], perm=[1, 0], name="lm_head_transpose")
            m.graph.node.insert(0, node)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def greedy_torch(model, ids, n):
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model.full(torch.tensor([ids]))[0, -1].argmax())
            out.append(nxt)
            if nxt in STOP_IDS:
                break
            ids.append(nxt)
    return out


def greedy_ort(sess, ids, n, margins=None):
    """Greedy tokens with the KV cache; margins, when a list, gets each step's top-1 minus top-2 logit."""
    feeds = {"input_ids": np.array([ids], dtype=np.int64),
             "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
             "position_ids": np.arange(len(ids), dtype=np.int64)[None]}
    for i in range(LAYERS):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = np.zeros((1, HEADS, 0, HEAD_DIM), dtype=np.float32)
    names = [o.name for o in sess.get_outputs()]
    out, total = [], len(ids)
    for _ in range(n):
        res = dict(zip(names, sess.run(None, feeds)))
        last = res["logits"][0, -1]
        nxt = int(last.argmax())
        if margins is not None:
            top2 = np.sort(last)[-2:]
            margins.append(float(top2[1] - top2[0]))
        out.append(nxt)
        if nxt in STOP_IDS:
            break
        feeds = {"input_ids": np.array([[nxt]], dtype=np.int64),
                 "attention_mask": np.ones((1, total + 1), dtype=np.int64),
                 "position_ids": np.array([[total]], dtype=np.int64)}
        total += 1
        for i in range(LAYERS):
            for kv in ("key", "value"):
                feeds[f"past_key_values.{i}.{kv}"] = res[f"present.{i}.{kv}"]
    return out


def sample(model, ids, n, gen, temperature=0.7, top_k=40):
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model.full(torch.tensor([ids]))[0, -1] / temperature
            v, i = logits.topk(top_k)
            nxt = int(i[torch.multinomial(torch.softmax(v, -1), 1, generator=gen)])
            if nxt in STOP_IDS:
                break
            out.append(nxt)
            ids.append(nxt)
    return out


def write_json(out, name, obj):
    with open(os.path.join(out, name), "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_configs(out, n_params):
    write_json(out, "config.json", {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": WIDTH,
        "intermediate_size": MLP,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": ENDOFTEXT,
        "eos_token_id": IM_END,
        "pad_token_id": ENDOFTEXT,
        "torch_dtype": "float32",
        "use_cache": True,
        "num_parameters": n_params,
    })
    write_json(out, "generation_config.json", {
        "bos_token_id": ENDOFTEXT,
        "eos_token_id": list(STOP_IDS),
        "pad_token_id": ENDOFTEXT,
        "do_sample": True,
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.95,
        "repetition_penalty": 1.1,
        "max_length": CONTEXT,
    })
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for i, s in enumerate(SPECIALS)}
    write_json(out, "tokenizer_config.json", {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": CONTEXT,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    })
    write_json(out, "special_tokens_map.json", {
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    })


def check_template():
    """The Python render() used for the training data equals CHAT_TEMPLATE under jinja2."""
    try:
        import jinja2
    except ImportError:
        print("jinja2 not installed: chat template not checked", file=sys.stderr)
        return
    t = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_TEMPLATE)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"},
            {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    for gp in (False, True):
        assert t.render(messages=msgs, add_generation_prompt=gp) == render(msgs, gp)


DEMO = [[{"role": "user", "content": "Give me a verse about light."}],
        [{"role": "user", "content": "In the beginning God created the heaven and the earth."}],
        [{"role": "user", "content": "Continue: The LORD is my shepherd;"}],
        [{"role": "user", "content": "What does the Bible say about love?"}],
        [{"role": "user", "content": "Read me John 3:16."}]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="where to write the model folder (default: beside this file)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    ap.add_argument("--checkpoint", help="load the weights from this torch file if it exists (no "
                    "training), else save them there after training")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    check_template()

    verses = read_kjv()
    convs = make_conversations(verses, random.Random(SEED))
    texts = [render(c) for c in convs]
    tok = train_tokenizer(texts)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    enc = tok.encode_batch(texts, add_special_tokens=False)
    n_tokens = sum(len(e.ids) for e in enc)
    print(f"corpus: {len(verses)} verses, {len(convs)} conversations, {n_tokens} tokens "
          f"({sum(len(t) for t in texts) / n_tokens:.2f} characters a token)")

    def pack(indices):
        stream, starts = [], []
        for i in indices:
            starts.append(len(stream))
            stream.extend(enc[i].ids)
            stream.append(ENDOFTEXT)
        starts = [s for s in starts if s + CONTEXT + 1 <= len(stream)]
        return torch.tensor(stream, dtype=torch.int64), starts

    val_idx = [i for i in range(len(convs)) if i % 100 == 50]
    train_idx = [i for i in range(len(convs)) if i % 100 != 50]
    stream, starts = pack(train_idx)
    val_stream, val_starts = pack(val_idx)

    model = ChatModel()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters; {args.steps} steps of {BATCH} x {CONTEXT} tokens "
          f"({args.steps * BATCH * CONTEXT / len(stream):.2f} passes over {len(stream)} training tokens)")
    if args.checkpoint and os.path.exists(args.checkpoint):
        model.load_state_dict(torch.load(args.checkpoint))
        model.eval()
        print(f"weights from {args.checkpoint}")
    else:
        elapsed, val_loss = train(model, stream, starts, val_stream, val_starts, args.steps)
        print(f"trained in {elapsed / 60:.1f} min; held-out loss {val_loss:.3f} "
              f"(perplexity {math.exp(val_loss):.1f}) on {len(val_idx)} conversations never trained on")
        if args.checkpoint:
            torch.save(model.state_dict(), args.checkpoint)

    write_configs(args.out, n_params)
    path = export(model, args.out)

    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for conv in DEMO:
        ids = tok.encode(render(conv, True), add_special_tokens=False).ids
        ref = greedy_torch(model, ids, 40)
        got = greedy_ort(sess, ids, 40)
        if ref != got:
            sys.exit(f"train.py: onnxruntime's greedy tokens differ from torch's for {conv[0]['content']!r}:"
                     f"\n  torch {ref}\n  onnxruntime {got}")
    print(f"export checked: onnxruntime {ort.__version__} decodes the same greedy tokens as torch "
          f"(KV cache against full recomputation) for {len(DEMO)} prompts")
    # What tests/chat_example_test.sh holds gpugrid's greedy decoding of this folder to.
    cases = []
    convs = DEMO[:3] + [None]
    for conv in convs:
        if conv is None:  # a second turn after the first case's answer, as `gpugrid chat` keeps it
            conv = DEMO[0] + [{"role": "assistant", "content": cases[0]["greedy_text"]},
                              {"role": "user", "content": "Continue: And God said,"}]
        text = render(conv, True)
        ids = tok.encode(text, add_special_tokens=False).ids
        margins = []
        got = greedy_ort(sess, ids, 32, margins)
        cases.append({"messages": conv, "prompt_ids": ids, "greedy_ids": got,
                      "greedy_text": tok.decode([t for t in got if t not in STOP_IDS]),
                      "margins": [round(m, 4) for m in margins]})
    write_json(args.out, "expected_greedy.json", {
        "note": "onnxruntime's greedy decoding of this folder (no repetition penalty, at most 32 tokens), "
                "written by train.py; margins: each step's top-1 minus top-2 logit",
        "cases": cases})
    gen = torch.Generator().manual_seed(SEED)
    for conv in DEMO:
        ids = tok.encode(render(conv, True), add_special_tokens=False).ids
        greedy = tok.decode([t for t in greedy_torch(model, ids, 60) if t not in STOP_IDS])
        sampled = tok.decode(sample(model, ids, 60, gen))
        print(f"> {conv[0]['content']}\n  greedy:  {greedy}\n  sampled: {sampled}")
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)
               if f.endswith(".json") or f.endswith(".onnx"))
    print(f"model.onnx {os.path.getsize(path)} bytes; model folder (json + onnx) {size} bytes")


if __name__ == "__main__":
    main()
