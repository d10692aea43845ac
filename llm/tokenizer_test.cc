#include "llm/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "llm/text.h"

using gpugrid::llm::decode_stream;
using gpugrid::llm::tokenizer;
using ids = std::vector<int32_t>;

namespace {

// A byte-level BPE over the letters of "lower" with merges whose order matters.
const char* kByteLevel = R"({
  "added_tokens": [{"id": 9, "content": "<|eot|>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"l": 0, "o": 1, "w": 2, "e": 3, "r": 4, "Ġ": 5, "lo": 6, "low": 7, "er": 8,
                                     "Ġl": 10},
            "merges": ["l o", "lo w", "e r", "Ġ l"]}
})";

tokenizer load(const char* text) {
  auto t = tokenizer::from_json(text, "test.json");
  if (!t.has_value()) FAIL(t.error().message());
  return std::move(t).value();
}

}  // namespace

TEST_CASE("byte-level BPE applies merges by rank and matches special tokens whole", "[llm][tokenizer]") {
  tokenizer t = load(kByteLevel);
  CHECK(*t.encode("lower") == ids{7, 8});
  CHECK(*t.encode("lower<|eot|>low") == ids{7, 8, 9, 7});
  // "l o" (rank 0) wins over "Ġ l" (rank 3): " low" is Ġ + low, not Ġl + o + w.
  CHECK(*t.encode(" low") == ids{5, 7});
  CHECK(*t.encode(" l") == ids{10});
  CHECK(t.decode({7, 8, 9, 7}) == "lower<|eot|>low");
  CHECK(t.decode({7, 8, 9, 7}, true) == "lowerlow");
}

TEST_CASE("byte-level BPE handles long runs without regex limits", "[llm][tokenizer]") {
  tokenizer t = load(kByteLevel);
  std::string text = "lower" + std::string(200000, ' ') + "low" + std::string(50000, ' ') + "er";
  auto got = t.encode(text);
  if (!got.has_value()) FAIL(got.error().message());
  CHECK(t.decode(*got) == text);
}

TEST_CASE("tokenizer rejects text that is not UTF-8 and unknown components by name", "[llm][tokenizer]") {
  tokenizer t = load(kByteLevel);
  auto bad = t.encode("ab\xff");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message().find("UTF-8") != std::string::npos);

  auto wp = tokenizer::from_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", "dir/tokenizer.json");
  REQUIRE_FALSE(wp.has_value());
  CHECK(wp.error().message() == "dir/tokenizer.json: unsupported model type 'WordPiece'");
  CHECK(wp.error().kind() == gpugrid::error_kind::invalid_input);

  auto pt = tokenizer::from_json(
      R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "BertPreTokenizer"}})", "t.json");
  REQUIRE_FALSE(pt.has_value());
  CHECK(pt.error().message() == "t.json: unsupported pre_tokenizer 'BertPreTokenizer'");

  auto nm = tokenizer::from_json(
      R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": {"type": "Precompiled"}})", "t.json");
  REQUIRE_FALSE(nm.has_value());
  CHECK(nm.error().message() == "t.json: unsupported normalizer 'Precompiled'");

  CHECK_FALSE(tokenizer::from_json("{not json", "t.json").has_value());
  CHECK_FALSE(tokenizer::load("/nonexistent/tokenizer.json").has_value());
  auto merge = tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})", "t.json");
  REQUIRE_FALSE(merge.has_value());
  CHECK(merge.error().message().find("merge 0") != std::string::npos);
}

TEST_CASE("SentencePiece BPE falls back to byte tokens and decodes them back", "[llm][tokenizer]") {
  std::string vocab = R"("<unk>": 0, "▁": 1, "a": 2, "▁a": 3)";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(R"(, "<0x{:02X}>": {})", b, 4 + b);
  std::string text = R"({"added_tokens": [{"id": 0, "content": "<unk>", "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                   {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": true,
              "vocab": {)" + vocab + R"(}, "merges": ["▁ a"]}})";
  tokenizer t = load(text.c_str());
  // "é" is C3 A9: two byte tokens.
  CHECK(*t.encode("a é") == ids{3, 1, 4 + 0xC3, 4 + 0xA9});
  CHECK(t.decode(*t.encode("a é")) == "a é");
  // A lone byte that is not UTF-8 decodes to U+FFFD.
  CHECK(t.decode({3, 4 + 0xC3}) == "a\xEF\xBF\xBD");
}

TEST_CASE("Unigram picks the best-scoring segmentation (Viterbi)", "[llm][tokenizer]") {
  tokenizer t = load(R"({"model": {"type": "Unigram", "unk_id": 0,
      "vocab": [["<unk>", 0], ["a", -1], ["b", -1], ["ab", -3], ["abc", -1.5], ["c", -1], ["bc", -0.5]]},
      "pre_tokenizer": {"type": "WhitespaceSplit"}, "decoder": {"type": "Fuse"}})");
  // a+bc = -1.5 beats abc = -1.5? ties keep the first found (a+bc ends later in the scan order).
  CHECK(*t.encode("ab") == ids{1, 2});   // -2 beats ab's -3
  CHECK(*t.encode("bcbc") == ids{6, 6});
  CHECK(*t.encode("zz a") == ids{0, 1});  // unknown characters fuse into one <unk>
}

TEST_CASE("decode_stream emits only complete UTF-8 and the same text as decode", "[llm][tokenizer]") {
  std::string vocab = R"("<unk>": 0, "▁": 1, "a": 2, "▁a": 3)";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(R"(, "<0x{:02X}>": {})", b, 4 + b);
  std::string text = R"({"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
    "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": {)" + vocab +
                     R"(}, "merges": ["▁ a"]}})";
  tokenizer t = load(text.c_str());
  std::string s = "a 😀 a";
  ids all = *t.encode(s);
  REQUIRE(all.size() > 6);
  decode_stream ds(t);
  std::string joined;
  for (int32_t id : all) {
    std::string piece = ds.step(id);
    CHECK(gpugrid::llm::is_valid_utf8(piece));
    CHECK(piece.find("\xEF\xBF\xBD") == std::string::npos);
    joined += piece;
  }
  CHECK(joined == s);
  CHECK(t.decode(all) == s);
}

// Parity with the `tokenizers` Python package on the tokenizers that
// tests/llm/make_tokenizers.py trains; run by tests/llm_tokenizer_parity_test.sh, which sets
// GPUGRID_LLM_TOKENIZERS to the folder it wrote.
TEST_CASE("tokenizer parity with the tokenizers package", "[.llm_parity]") {
  const char* dir = std::getenv("GPUGRID_LLM_TOKENIZERS");
  REQUIRE(dir != nullptr);
  for (const char* kind : {"gpt2_bpe", "llama3_bpe", "qwen2_bpe", "roberta_bpe", "sp_bpe_legacy", "sp_bpe_metaspace", "unigram",
                           "unigram_nfkc_bytes"}) {
    std::string base = std::string(dir) + "/" + kind;
    auto t = tokenizer::load(base + "/tokenizer.json");
    INFO(kind);
    REQUIRE(t.has_value());
    std::ifstream f(base + "/cases.json");
    REQUIRE(f.good());
    auto cases = nlohmann::json::parse(f);
    REQUIRE(cases.size() > 20);
    for (auto& c : cases) {
      std::string text = c["text"];
      INFO("text: " << text);
      auto got = t->encode(text);
      REQUIRE(got.has_value());
      CHECK(*got == c["ids"].get<ids>());
      CHECK(*t->encode(text, true) == c["ids_special"].get<ids>());
      ids expect = c["ids"].get<ids>();
      CHECK(t->decode(expect) == c["decoded"].get<std::string>());
      CHECK(t->decode(expect, true) == c["decoded_skip"].get<std::string>());
      decode_stream ds(*t, false);
      std::string streamed;
      for (int32_t id : expect) streamed += ds.step(id);
      CHECK(streamed == c["decoded"].get<std::string>());
    }
  }
}

// Random valid UTF-8 text (characters of every length, whitespace runs) and mutated tokenizer
// files: ids or a one-line status, never a crash.
TEST_CASE("tokenizer survives random text and mutated files", "[llm][tokenizer]") {
  uint32_t seed = 777;
  auto rnd = [&](uint32_t n) {
    seed = seed * 1664525u + 1013904223u;
    return (seed >> 8) % n;
  };
  tokenizer bl = load(kByteLevel);
  for (int iter = 0; iter < 300; ++iter) {
    std::string text;
    for (int k = 0, n = static_cast<int>(rnd(40)); k < n; ++k) {
      static const uint32_t ranges[] = {0x20, 0x7f, 0xa0, 0x800, 0x3000, 0xd7ff, 0xe000, 0x10ffff};
      uint32_t r = rnd(4);
      uint32_t cp = ranges[2 * r] + rnd(ranges[2 * r + 1] - ranges[2 * r]);
      if (rnd(5) == 0) cp = " \t\n"[rnd(3)];
      gpugrid::llm::append_utf8(text, cp);
    }
    auto ids = bl.encode(text);
    REQUIRE(ids.has_value());
  }
  // Mutated tokenizer files load or fail with a one-line status.
  std::string base = kByteLevel;
  int loaded = 0;
  for (int iter = 0; iter < 500; ++iter) {
    std::string s = base;
    size_t at = rnd(static_cast<uint32_t>(s.size()));
    switch (rnd(3)) {
      case 0: s.erase(at, 1 + rnd(4)); break;
      case 1: s.insert(at, 1, "{}[]\",:0-9a"[rnd(12)]); break;
      default: s[at] = static_cast<char>('0' + rnd(10)); break;
    }
    auto t = tokenizer::from_json(s, "m.json");
    if (!t.has_value()) {
      CHECK(t.error().message().find('\n') == std::string::npos);
      continue;
    }
    ++loaded;
    auto ids = t->encode("lower low<|eot|> er");
    if (ids.has_value()) (void)t->decode(*ids);
  }
  CHECK(loaded > 0);
}
