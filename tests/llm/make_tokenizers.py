#!/usr/bin/env python3
"""Trains small tokenizers of each kind gpugrid's C++ tokenizer reads, with the `tokenizers`
package, on a multi-script corpus this script builds, and writes for each kind:
  OUT/<kind>/tokenizer.json   the trained tokenizer
  OUT/<kind>/cases.json       [{"text", "ids", "ids_special", "decoded", "decoded_skip"}]
where ids are encode(text, add_special_tokens=False), ids_special with add_special_tokens=True,
decoded = decode(ids, skip_special_tokens=False), decoded_skip = decode(ids, True).
Nothing is downloaded. Usage: make_tokenizers.py OUT_DIR
"""
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                  r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a dog's life; they'll say we'd've known, wouldn't they?",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧！",
    "日本語のテキストも少し入れておきます。カタカナとひらがな。",
    "한국어 문장도 하나 넣습니다.",
    "أنا قادر على أكل الزجاج و هذا لا يؤلمني.",
    "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती।",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷 done",
    "Numbers 0 12 345 6789 3.14159 1,000,000 and 2026-12-02",
    "tabs\tand\t\ttabs, newlines\n\nand   runs   of    spaces     here",
    "  leading spaces and trailing spaces   ",
    "def f(x):\n    return x * 2  # code\n",
    "Crème brûlée, naïve façade, Zürich, São Paulo, Łódź.",
    "MIXED case WORDS With CAPITALS and camelCase and snake_case",
    "URLs: https://example.org/a?b=c&d=e#f and mail@example.com",
    "Ünïcödé çhåràçtérs: ß ø æ œ ñ",
]

TEST_TEXTS = [
    "", " ", "  ", "\n", "\t \n ", "a", "hello world", " hello  world ",
    "Hello, World! How's it going? I'm fine, we'll see.",
    "Привет, мир! Как дела?", "Γειά σου Κόσμε", "你好，世界！", "こんにちは世界",
    "مرحبا بالعالم", "नमस्ते दुनिया", "안녕하세요",
    "👋🌍 family: 👨‍👩‍👧 flag: 🇯🇵 skin: 👍🏿 keycap: 1️⃣",
    "numbers 1234567890 and 3.14 and 1e-9",
    "line one\nline two\r\nline three\n\n\nend",
    "    indented code\n\tif (x) { return y; }",
    "unseen script: ქართული ენა and ꯃꯩꯇꯩ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 🦀🦀",
    "trailing whitespace   \t  ",
    "<|endoftext|>text after a special token",
    "<|im_start|>user\nHi  <mask>  there<|im_end|>\n<|im_start|>assistant\n",
    "Café vs Cafe\u0301 (NFC), ﬁ ligature, ① circled, Ｆｕｌｌ width",
    "a<mask>b <mask> c  <mask>\t d",
    "before<|endoftext|>after and <|user|> hi <|end|>",
    "<s> not at start </s> and <unk>",
    "repeated aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa and !!!!!!!!!!",
]


def corpus():
    rng = random.Random(1234)
    lines = list(SENTENCES)
    words = " ".join(SENTENCES).split()
    for _ in range(3000):
        n = rng.randint(1, 12)
        sep = rng.choice([" ", " ", " ", "  ", "\t", "\n", ", ", " - "])
        lines.append(sep.join(rng.choice(words) for _ in range(n)))
    return lines


SPECIALS = ["<|endoftext|>", "<|user|>", "<|end|>"]


def byte_level_bpe(llama3):
    tok = Tokenizer(models.BPE(ignore_merges=llama3))
    if llama3:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if llama3:
        bos = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def qwen2_bpe(prefix_space):
    """Qwen2 style (NFC, digits one by one, ChatML special tokens) or, with prefix_space, a
    RoBERTa-style ByteLevel(add_prefix_space); plus added tokens that strip the space around them."""
    tok = Tokenizer(models.BPE())
    if prefix_space:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    else:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=prefix_space, special=True, normalized=False)])
    tok.add_tokens([AddedToken(" there", normalized=True, special=False)])
    return tok


def sentencepiece_bpe(legacy):
    """Llama-2 / Phi-3 style: byte fallback, <unk>, spaces as U+2581."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                                         decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  limit_alphabet=120)
    # Train on the text as the model will see it: spaces already replaced.
    lines = ["▁" + line.replace(" ", "▁") for line in corpus()]
    tok.train_from_iterator(lines, trainer)
    # Only <unk>, <s>, </s> are special tokens; the byte pieces are ordinary vocabulary.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
    tok = Tokenizer.from_str(json.dumps(data))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return tok


def unigram(byte_fallback):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " ")]) if not byte_fallback \
        else normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>",
                                      show_progress=False, max_piece_length=8)
    tok.train_from_iterator(corpus(), trainer)
    if byte_fallback:
        data = json.loads(tok.to_str())
        m = data["model"]
        low = min(s for _, s in m["vocab"]) - 1.0
        m["vocab"] += [[f"<0x{b:02X}>", low] for b in range(256)]
        m["byte_fallback"] = True
        data["decoder"] = {"type": "Sequence", "decoders": [data["decoder"], {"type": "ByteFallback"}, {"type": "Fuse"}]}
        tok = Tokenizer.from_str(json.dumps(data))
    return tok


KINDS = {
    "gpt2_bpe": lambda: byte_level_bpe(False),
    "llama3_bpe": lambda: byte_level_bpe(True),
    "qwen2_bpe": lambda: qwen2_bpe(False),
    "roberta_bpe": lambda: qwen2_bpe(True),
    "sp_bpe_legacy": lambda: sentencepiece_bpe(True),
    "sp_bpe_metaspace": lambda: sentencepiece_bpe(False),
    "unigram": lambda: unigram(False),
    "unigram_nfkc_bytes": lambda: unigram(True),
}


def main():
    out = sys.argv[1]
    texts = TEST_TEXTS + SENTENCES + corpus()[len(SENTENCES):len(SENTENCES) + 40]
    for kind, make in KINDS.items():
        tok = make()
        d = os.path.join(out, kind)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        cases = []
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            cases.append({
                "text": t, "ids": ids,
                "ids_special": tok.encode(t, add_special_tokens=True).ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip": tok.decode(ids, skip_special_tokens=True),
            })
        with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=0)
        print(f"{kind}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


if __name__ == "__main__":
    main()
