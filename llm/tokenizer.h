// A text tokenizer read from a Hugging Face `tokenizer.json`.
//
// Supported, as the `tokenizers` library defines them:
//   models          BPE (merges with ranks, byte_fallback, unk/fuse_unk, ignore_merges,
//                   continuing_subword_prefix, end_of_word_suffix) and Unigram (Viterbi,
//                   byte_fallback)
//   normalizers     Sequence, Prepend, Replace, Strip, Lowercase, NFC, NFD, NFKC, NFKD
//   pre-tokenizers  Sequence, ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit
//   post-processors TemplateProcessing (single sequence), ByteLevel, Sequence
//   decoders        Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip
//   added tokens    matched as wholes (leftmost-longest) before normalization, with lstrip,
//                   rstrip and single_word; special ones can be skipped on decode.
// Anything else in the file fails to load with a one-line error naming the file and the
// unsupported component, never a guess.
//
// A loaded tokenizer is immutable: encode/decode may be called from several threads at once.
// Failures are values: load -> invalid_input (exit 2) or io; encode -> invalid_input for text
// that is not valid UTF-8.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace gpugrid::llm {

struct tokenizer_impl;

class tokenizer {
 public:
  // Reads and parses `path` (a tokenizer.json). Errors name the path.
  static expected<tokenizer> load(const std::string& path);
  // Parses JSON text; `name` is used in error messages in place of a path.
  static expected<tokenizer> from_json(std::string_view json, const std::string& name);

  // Splits text into token ids. add_special_tokens applies the post-processor (e.g. a BOS).
  expected<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens = false) const;
  // Joins ids back into text (invalid byte sequences become U+FFFD, as the tokenizers library
  // does). Ids outside the vocabulary are dropped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  size_t vocab_size() const;
  // -1 when the token is unknown.
  int32_t token_to_id(std::string_view token) const;
  // Empty when the id is unknown.
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

 private:
  std::shared_ptr<const tokenizer_impl> impl_;
};

// Turns a stream of ids into text pieces as they arrive, emitting only complete valid UTF-8
// (a character split across byte tokens is held until its last byte comes) and the same text
// that decode() gives for the whole sequence. Not thread-safe; one per generated sequence.
// Keeps a reference to the tokenizer, which must outlive it.
class decode_stream {
 public:
  explicit decode_stream(const tokenizer& tok, bool skip_special_tokens = true)
      : tok_(tok), skip_special_(skip_special_tokens) {}
  // The new text this id completes; empty when it completes none yet.
  std::string step(int32_t id);

 private:
  const tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  std::string prefix_;
  size_t prefix_index_ = 0;
};

}  // namespace gpugrid::llm
