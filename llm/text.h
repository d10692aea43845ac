// UTF-8 and regular-expression helpers shared by the tokenizer and the chat-template renderer.
//
// regex wraps PCRE2 compiled in UTF + UCP mode, so \p{L}, \s, \w follow Unicode properties as
// the Oniguruma regexes of Hugging Face tokenizer.json files do. A regex is immutable after
// compile() and may be used from several threads at once (each call makes its own match data).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace gpugrid::llm {

// Length in bytes of the valid UTF-8 character starting at s[i], or 0 when the bytes there are
// not one (bad lead byte, bad continuation, overlong, surrogate, past U+10FFFF, truncated).
size_t utf8_char_length(std::string_view s, size_t i);
bool is_valid_utf8(std::string_view s);
// Length of the longest prefix of s that is whole valid UTF-8 characters.
size_t valid_utf8_prefix(std::string_view s);
// Replaces each maximal invalid subsequence with U+FFFD, as Rust's String::from_utf8_lossy.
std::string utf8_lossy(std::string_view s);
// Appends the UTF-8 encoding of code point cp.
void append_utf8(std::string& out, uint32_t cp);
// Decodes the character at s[i] (which must be valid); sets len to its byte length.
uint32_t decode_utf8(std::string_view s, size_t i, size_t* len);
// Unicode White_Space (Rust's char::is_whitespace).
bool is_unicode_whitespace(uint32_t cp);

// Unicode normalization through ICU: form is "NFC", "NFD", "NFKC" or "NFKD".
expected<std::string> unicode_normalize(std::string_view s, std::string_view form);
// Unicode lower/upper case through ICU (full case mapping, root locale).
std::string unicode_lower(std::string_view s);
std::string unicode_upper(std::string_view s);

class regex {
 public:
  // Fails with invalid_input naming the pattern and PCRE2's message.
  static expected<regex> compile(const std::string& pattern);
  // Escapes a literal string into a pattern that matches exactly it.
  static std::string quote(std::string_view literal);

  // Byte ranges [begin, end) of the successive non-overlapping matches in s (s must be valid
  // UTF-8). An empty match advances by one character, as Rust's find_iter does.
  expected<std::vector<std::pair<size_t, size_t>>> find_all(std::string_view s) const;
  // Replaces every match with `with` (literal).
  expected<std::string> replace_all(std::string_view s, std::string_view with) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct code_deleter {
    void operator()(void* code) const;
  };
  std::string pattern_;
  std::shared_ptr<void> code_;  // pcre2_code_8*
};

}  // namespace gpugrid::llm
