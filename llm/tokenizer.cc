#include "llm/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "llm/text.h"

namespace gpugrid::llm {

using json = nlohmann::json;

namespace {

// A pre-token: text, and whether it starts at offset 0 of the original input (Metaspace's
// prepend_scheme "first" prepends only there).
struct piece {
  std::string text;
  bool at_origin;
};

using normalize_fn = std::function<expected<std::string>(std::string)>;
using pre_tokenize_fn = std::function<status(std::vector<piece>&)>;
using decode_fn = std::function<void(std::vector<std::string>&)>;

const std::string kMetaspace = "\xE2\x96\x81";  // U+2581

// ---- byte-level alphabet (GPT-2's bytes_to_unicode) ----
struct byte_alphabet {
  std::string byte_to_char[256];
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  byte_alphabet() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? static_cast<uint32_t>(b) : next++;
      append_utf8(byte_to_char[b], cp);
      char_to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};
const byte_alphabet& alphabet() {
  static const byte_alphabet a;
  return a;
}

// ---- splitting a string by matches, as tokenizers' SplitDelimiterBehavior ----
enum class split_behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

std::vector<std::pair<size_t, size_t>> split_ranges(size_t size, const std::vector<std::pair<size_t, size_t>>& found,
                                                    split_behavior behavior, bool invert) {
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;  // range, is delimiter
  size_t last = 0;
  for (auto [b, e] : found) {
    if (b > last) parts.push_back({{last, b}, invert});
    parts.push_back({{b, e}, !invert});
    last = e;
  }
  if (last < size) parts.push_back({{last, size}, invert});

  std::vector<std::pair<size_t, size_t>> out;
  switch (behavior) {
    case split_behavior::isolated:
      for (auto& p : parts) out.push_back(p.first);
      break;
    case split_behavior::removed:
      for (auto& p : parts)
        if (!p.second) out.push_back(p.first);
      break;
    case split_behavior::merged_with_previous: {
      bool prev = false;
      for (auto& [r, m] : parts) {
        if (m && !prev && !out.empty()) out.back().second = r.second;
        else out.push_back(r);
        prev = m;
      }
      break;
    }
    case split_behavior::merged_with_next: {
      bool prev = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        auto& [r, m] = *it;
        if (m && !prev && !out.empty()) out.back().first = r.first;
        else out.push_back(r);
        prev = m;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case split_behavior::contiguous: {
      bool prev = false;
      bool any = false;
      for (auto& [r, m] : parts) {
        if (any && m == prev) out.back().second = r.second;
        else out.push_back(r);
        prev = m;
        any = true;
      }
      break;
    }
  }
  return out;
}

status split_pieces(std::vector<piece>& pieces, const regex& re, split_behavior behavior, bool invert) {
  std::vector<piece> out;
  for (auto& p : pieces) {
    GG_ASSIGN_OR_RETURN(auto found, re.find_all(p.text));
    for (auto [b, e] : split_ranges(p.text.size(), found, behavior, invert))
      if (e > b) out.push_back({p.text.substr(b, e - b), p.at_origin && b == 0});
  }
  pieces = std::move(out);
  return status::ok();
}

std::string replace_literal(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t last = 0;
  for (size_t pos; (pos = s.find(from, last)) != std::string::npos; last = pos + from.size()) {
    out.append(s, last, pos - last);
    out += to;
  }
  out.append(s, last, std::string::npos);
  return out;
}

// Leading/trailing Unicode whitespace strip, on whole characters.
std::string strip_whitespace(const std::string& s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t n;
      uint32_t cp = decode_utf8(s, b, &n);
      if (!is_unicode_whitespace(cp)) break;
      b += n;
    }
  }
  if (right) {
    while (e > b) {
      size_t k = e - 1;
      while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
      size_t n;
      uint32_t cp = decode_utf8(s, k, &n);
      if (!is_unicode_whitespace(cp)) break;
      e = k;
    }
  }
  return s.substr(b, e - b);
}

std::vector<std::string> utf8_chars(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_char_length(s, i);
    if (n == 0) n = 1;
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string byte_token(uint8_t b) { return fmt::format("<0x{:02X}>", b); }

// ---- models ----
struct model {
  virtual ~model() = default;
  virtual void encode(const std::string& word, std::vector<int32_t>& out) const = 0;
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;  // dense by id; gaps are empty
};

struct bpe_model : model {
  struct merge {
    int32_t rank;
    int32_t new_id;
  };
  std::unordered_map<uint64_t, merge> merges;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string prefix, suffix;
  int32_t byte_ids[256];

  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void encode(const std::string& word, std::vector<int32_t>& out) const override {
    if (ignore_merges) {
      auto it = vocab.find(word);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    struct symbol {
      int32_t id;
      int prev, next;
      bool alive;
    };
    std::vector<symbol> syms;
    auto add = [&](int32_t id) {
      int n = static_cast<int>(syms.size());
      syms.push_back({id, n - 1, n + 1, true});
    };
    bool pending_unk = false;
    auto chars = utf8_chars(word);
    for (size_t i = 0; i < chars.size(); ++i) {
      std::string s = chars[i];
      if (i > 0 && !prefix.empty()) s = prefix + s;
      if (i + 1 == chars.size() && !suffix.empty()) s += suffix;
      auto it = vocab.find(s);
      if (it != vocab.end()) {
        if (pending_unk) add(unk_id), pending_unk = false;
        add(it->second);
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (unsigned char b : chars[i]) all = all && byte_ids[b] >= 0;
        if (all) {
          if (pending_unk) add(unk_id), pending_unk = false;
          for (unsigned char b : chars[i]) add(byte_ids[b]);
          continue;
        }
      }
      if (unk_id >= 0) {
        if (pending_unk && !fuse_unk) add(unk_id);
        pending_unk = true;
      }
    }
    if (pending_unk) add(unk_id);
    if (syms.empty()) return;
    syms.back().next = -1;

    struct cand {
      int32_t rank;
      int pos;
      int32_t new_id;
      bool operator<(const cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<cand> queue;
    auto find_merge = [&](int32_t a, int32_t b) -> const merge* {
      auto it = merges.find(key(a, b));
      return it == merges.end() ? nullptr : &it->second;
    };
    for (size_t i = 0; i + 1 < syms.size(); ++i)
      if (auto* m = find_merge(syms[i].id, syms[i + 1].id)) queue.push({m->rank, static_cast<int>(i), m->new_id});
    while (!queue.empty()) {
      cand top = queue.top();
      queue.pop();
      symbol& cur = syms[top.pos];
      if (!cur.alive || cur.next < 0) continue;
      symbol& right = syms[cur.next];
      auto* m = find_merge(cur.id, right.id);
      if (!m || m->new_id != top.new_id) continue;
      cur.id = top.new_id;
      right.alive = false;
      cur.next = right.next;
      if (right.next >= 0) syms[right.next].prev = top.pos;
      if (cur.prev >= 0)
        if (auto* pm = find_merge(syms[cur.prev].id, cur.id)) queue.push({pm->rank, cur.prev, pm->new_id});
      if (cur.next >= 0)
        if (auto* nm = find_merge(cur.id, syms[cur.next].id)) queue.push({nm->rank, top.pos, nm->new_id});
    }
    for (auto& s : syms)
      if (s.alive) out.push_back(s.id);
  }
};

struct unigram_model : model {
  std::vector<double> scores;
  int32_t unk_id = -1;
  bool byte_fallback = false;
  double min_score = 0;
  int32_t byte_ids[256];

  // A byte trie of the pieces: node 0 is the root; children sorted by byte.
  struct trie_node {
    std::vector<std::pair<uint8_t, int32_t>> next;
    int32_t id = -1;
  };
  std::vector<trie_node> trie{trie_node{}};

  int32_t trie_child(int32_t node, uint8_t b) const {
    const auto& next = trie[static_cast<size_t>(node)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(b, INT32_MIN));
    return it != next.end() && it->first == b ? it->second : -1;
  }
  void trie_insert(const std::string& piece, int32_t id) {
    int32_t node = 0;
    for (unsigned char b : piece) {
      int32_t child = trie_child(node, b);
      if (child < 0) {
        child = static_cast<int32_t>(trie.size());
        trie.emplace_back();
        auto& next = trie[static_cast<size_t>(node)].next;
        next.insert(std::lower_bound(next.begin(), next.end(), std::make_pair(b, INT32_MIN)), {b, child});
      }
      node = child;
    }
    if (trie[static_cast<size_t>(node)].id < 0) trie[static_cast<size_t>(node)].id = id;
  }

  void encode(const std::string& s, std::vector<int32_t>& out) const override {
    if (s.empty()) return;
    const double unk_score = min_score - 10.0;
    struct node_t {
      double score = 0;
      long start = -1;
      int32_t id = -1;
    };
    std::vector<node_t> best(s.size() + 1);
    best[0].start = 0;
    for (size_t at = 0; at < s.size();) {
      size_t mb = utf8_char_length(s, at);
      if (mb == 0) mb = 1;
      double base = best[at].score;
      bool single = false;
      // Every vocabulary piece that starts here, shortest first (the trie order).
      int32_t node = 0;
      for (size_t end = at; end < s.size();) {
        node = trie_child(node, static_cast<uint8_t>(s[end]));
        if (node < 0) break;
        ++end;
        int32_t id = trie[static_cast<size_t>(node)].id;
        if (id >= 0) {
          node_t& t = best[end];
          double cand = scores[static_cast<size_t>(id)] + base;
          if (t.start < 0 || cand > t.score) t = {cand, static_cast<long>(at), id};
          if (end - at == mb) single = true;
        }
      }
      if (!single) {
        node_t& t = best[at + mb];
        double cand = unk_score + base;
        if (t.start < 0 || cand > t.score) t = {cand, static_cast<long>(at), unk_id};
      }
      at += mb;
    }
    // Backtrack; consecutive unknown pieces fuse into one.
    std::vector<std::string> pieces;
    std::string unk_run;
    for (size_t end = s.size(); end > 0;) {
      const node_t& n = best[end];
      size_t start = static_cast<size_t>(n.start);
      std::string text = s.substr(start, end - start);
      if (unk_id >= 0 && n.id == unk_id) {
        unk_run = text + unk_run;
      } else {
        if (!unk_run.empty()) pieces.push_back(std::move(unk_run)), unk_run.clear();
        pieces.push_back(std::move(text));
      }
      end = start;
    }
    if (!unk_run.empty()) pieces.push_back(std::move(unk_run));
    std::reverse(pieces.begin(), pieces.end());
    for (auto& p : pieces) {
      auto it = vocab.find(p);
      if (it != vocab.end()) {
        out.push_back(it->second);
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        for (unsigned char b : p) all = all && byte_ids[b] >= 0;
        if (all) {
          for (unsigned char b : p) out.push_back(byte_ids[b]);
          continue;
        }
      }
      if (unk_id >= 0) out.push_back(unk_id);
    }
  }
};

struct added_token {
  int32_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

}  // namespace

struct tokenizer_impl {
  std::string name;
  std::unique_ptr<model> m;
  std::vector<added_token> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, int32_t> added_by_content;
  normalize_fn normalizer;
  pre_tokenize_fn pre_tokenizer;
  std::vector<decode_fn> decoders;  // applied in order; empty = join with spaces
  bool has_decoder = false;
  // Post-processor for one sequence: ids before and after it.
  std::vector<int32_t> post_before, post_after;

  // Splits text into [begin, end, added index or -1] around the added tokens of the given kind.
  struct segment {
    size_t begin, end;
    long added;
  };
  std::vector<segment> split_added(std::string_view text, bool normalized_kind) const;
  status encode_segment(std::string text, bool at_origin, std::vector<int32_t>& out) const;
};

namespace {

bool is_word_char(std::string_view s, size_t i) {
  size_t n;
  uint32_t cp = decode_utf8(s, i, &n);
  if (cp < 0x80) return std::isalnum(static_cast<int>(cp)) || cp == '_';
  return !is_unicode_whitespace(cp);  // non-ASCII letters and marks count as word characters
}

struct load_error {
  std::string what;
};

[[noreturn]] void fail(const std::string& what) { throw load_error{what}; }

const json& need(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail(fmt::format("{} has no '{}'", where, key));
  return j.at(key);
}

std::string pattern_of(const json& p, const std::string& where, bool* is_regex) {
  if (p.is_object() && p.contains("Regex")) {
    *is_regex = true;
    return p.at("Regex").get<std::string>();
  }
  if (p.is_object() && p.contains("String")) {
    *is_regex = false;
    return p.at("String").get<std::string>();
  }
  fail(where + ": pattern is neither String nor Regex");
}

regex compile_or_fail(const std::string& pattern, const std::string& where) {
  auto r = regex::compile(pattern);
  if (!r) fail(where + ": " + r.error().message());
  return std::move(r).value();
}

normalize_fn make_normalizer(const json& j) {
  std::string type = need(j, "type", "normalizer").get<std::string>();
  if (type == "Sequence") {
    std::vector<normalize_fn> list;
    for (auto& n : need(j, "normalizers", "Sequence normalizer")) list.push_back(make_normalizer(n));
    return [list](std::string s) -> expected<std::string> {
      for (auto& f : list) {
        GG_ASSIGN_OR_RETURN(s, f(std::move(s)));
      }
      return s;
    };
  }
  if (type == "Prepend") {
    std::string p = need(j, "prepend", "Prepend normalizer").get<std::string>();
    return [p](std::string s) -> expected<std::string> { return s.empty() ? s : p + s; };
  }
  if (type == "Replace") {
    bool is_re = false;
    std::string pat = pattern_of(need(j, "pattern", "Replace normalizer"), "Replace normalizer", &is_re);
    std::string content = need(j, "content", "Replace normalizer").get<std::string>();
    if (!is_re) return [pat, content](std::string s) -> expected<std::string> { return replace_literal(s, pat, content); };
    regex re = compile_or_fail(pat, "Replace normalizer");
    return [re, content](std::string s) -> expected<std::string> { return re.replace_all(s, content); };
  }
  if (type == "Strip") {
    bool l = j.value("strip_left", true), r = j.value("strip_right", true);
    return [l, r](std::string s) -> expected<std::string> { return strip_whitespace(s, l, r); };
  }
  if (type == "Lowercase") return [](std::string s) -> expected<std::string> { return unicode_lower(s); };
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD")
    return [type](std::string s) -> expected<std::string> { return unicode_normalize(s, type); };
  fail(fmt::format("unsupported normalizer '{}'", type));
}

split_behavior behavior_of(const json& j, const std::string& where) {
  std::string b = need(j, "behavior", where).get<std::string>();
  if (b == "Removed") return split_behavior::removed;
  if (b == "Isolated") return split_behavior::isolated;
  if (b == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (b == "MergedWithNext") return split_behavior::merged_with_next;
  if (b == "Contiguous") return split_behavior::contiguous;
  fail(fmt::format("{}: unsupported split behavior '{}'", where, b));
}

const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

pre_tokenize_fn make_pre_tokenizer(const json& j) {
  std::string type = need(j, "type", "pre_tokenizer").get<std::string>();
  if (type == "Sequence") {
    std::vector<pre_tokenize_fn> list;
    for (auto& p : need(j, "pretokenizers", "Sequence pre_tokenizer")) list.push_back(make_pre_tokenizer(p));
    return [list](std::vector<piece>& ps) -> status {
      for (auto& f : list) GG_RETURN_IF_ERROR(f(ps));
      return status::ok();
    };
  }
  if (type == "ByteLevel") {
    bool prefix_space = j.value("add_prefix_space", false);
    bool use_regex = j.value("use_regex", true);
    regex re = compile_or_fail(kGpt2Pattern, "ByteLevel pre_tokenizer");
    return [prefix_space, use_regex, re](std::vector<piece>& ps) -> status {
      if (prefix_space)
        for (auto& p : ps)
          if (p.text.empty() || p.text[0] != ' ') p.text = " " + p.text;
      if (use_regex) GG_RETURN_IF_ERROR(split_pieces(ps, re, split_behavior::isolated, false));
      const auto& a = alphabet();
      for (auto& p : ps) {
        std::string mapped;
        for (unsigned char b : p.text) mapped += a.byte_to_char[b];
        p.text = std::move(mapped);
      }
      return status::ok();
    };
  }
  if (type == "Split") {
    bool is_re = false;
    std::string pat = pattern_of(need(j, "pattern", "Split pre_tokenizer"), "Split pre_tokenizer", &is_re);
    regex re = compile_or_fail(is_re ? pat : regex::quote(pat), "Split pre_tokenizer");
    split_behavior b = behavior_of(j, "Split pre_tokenizer");
    bool invert = j.value("invert", false);
    return [re, b, invert](std::vector<piece>& ps) { return split_pieces(ps, re, b, invert); };
  }
  if (type == "Metaspace") {
    std::string rep = j.value("replacement", kMetaspace);
    std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    if (scheme != "always" && scheme != "first" && scheme != "never")
      fail(fmt::format("Metaspace pre_tokenizer: unsupported prepend_scheme '{}'", scheme));
    bool split = j.value("split", true);
    regex re = compile_or_fail(regex::quote(rep), "Metaspace pre_tokenizer");
    return [rep, scheme, split, re](std::vector<piece>& ps) -> status {
      for (auto& p : ps) {
        p.text = replace_literal(p.text, " ", rep);
        bool starts = p.text.compare(0, rep.size(), rep) == 0;
        if (!starts && (scheme == "always" || (scheme == "first" && p.at_origin))) p.text = rep + p.text;
      }
      if (split) return split_pieces(ps, re, split_behavior::merged_with_next, false);
      return status::ok();
    };
  }
  if (type == "Digits") {
    bool individual = j.value("individual_digits", false);
    regex re = compile_or_fail(R"(\p{N})", "Digits pre_tokenizer");
    split_behavior b = individual ? split_behavior::isolated : split_behavior::contiguous;
    return [re, b](std::vector<piece>& ps) { return split_pieces(ps, re, b, false); };
  }
  if (type == "Whitespace") {
    regex re = compile_or_fail(R"(\w+|[^\w\s]+)", "Whitespace pre_tokenizer");
    return [re](std::vector<piece>& ps) { return split_pieces(ps, re, split_behavior::removed, true); };
  }
  if (type == "WhitespaceSplit") {
    regex re = compile_or_fail(R"(\s+)", "WhitespaceSplit pre_tokenizer");
    return [re](std::vector<piece>& ps) { return split_pieces(ps, re, split_behavior::removed, false); };
  }
  fail(fmt::format("unsupported pre_tokenizer '{}'", type));
}

void add_decoders(const json& j, std::vector<decode_fn>& out) {
  std::string type = need(j, "type", "decoder").get<std::string>();
  if (type == "Sequence") {
    for (auto& d : need(j, "decoders", "Sequence decoder")) add_decoders(d, out);
    return;
  }
  if (type == "ByteLevel") {
    out.push_back([](std::vector<std::string>& toks) {
      const auto& a = alphabet();
      std::string bytes;
      for (auto& t : toks) {
        std::string mapped;
        bool ok = true;
        for (size_t i = 0; i < t.size() && ok;) {
          size_t n;
          uint32_t cp = decode_utf8(t, i, &n);
          auto it = a.char_to_byte.find(cp);
          if (it == a.char_to_byte.end()) ok = false;
          else mapped += static_cast<char>(it->second);
          i += n;
        }
        bytes += ok ? mapped : t;
      }
      toks.assign(1, utf8_lossy(bytes));
    });
    return;
  }
  if (type == "Metaspace") {
    std::string rep = j.value("replacement", kMetaspace);
    std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    out.push_back([rep, scheme](std::vector<std::string>& toks) {
      for (size_t i = 0; i < toks.size(); ++i)
        toks[i] = replace_literal(toks[i], rep, i == 0 && scheme != "never" ? "" : " ");
    });
    return;
  }
  if (type == "Replace") {
    bool is_re = false;
    std::string pat = pattern_of(need(j, "pattern", "Replace decoder"), "Replace decoder", &is_re);
    std::string content = need(j, "content", "Replace decoder").get<std::string>();
    if (is_re) {
      regex re = compile_or_fail(pat, "Replace decoder");
      out.push_back([re, content](std::vector<std::string>& toks) {
        for (auto& t : toks) {
          auto r = re.replace_all(t, content);
          if (r) t = std::move(r).value();
        }
      });
    } else {
      out.push_back([pat, content](std::vector<std::string>& toks) {
        for (auto& t : toks) t = replace_literal(t, pat, content);
      });
    }
    return;
  }
  if (type == "ByteFallback") {
    out.push_back([](std::vector<std::string>& toks) {
      std::vector<std::string> res;
      std::string bytes;
      size_t nbytes = 0;
      auto flush = [&] {
        if (!nbytes) return;
        if (is_valid_utf8(bytes)) res.push_back(bytes);
        else
          for (size_t k = 0; k < nbytes; ++k) res.push_back("\xEF\xBF\xBD");
        bytes.clear();
        nbytes = 0;
      };
      for (auto& t : toks) {
        unsigned v = 0;
        bool is_byte = t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                       std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]));
        if (is_byte) {
          v = static_cast<unsigned>(std::stoul(t.substr(3, 2), nullptr, 16));
          bytes += static_cast<char>(v);
          ++nbytes;
        } else {
          flush();
          res.push_back(t);
        }
      }
      flush();
      toks = std::move(res);
    });
    return;
  }
  if (type == "Fuse") {
    out.push_back([](std::vector<std::string>& toks) {
      std::string all;
      for (auto& t : toks) all += t;
      toks.assign(1, all);
    });
    return;
  }
  if (type == "Strip") {
    std::string content = need(j, "content", "Strip decoder").get<std::string>();
    size_t start = j.value("start", 0), stop = j.value("stop", 0);
    out.push_back([content, start, stop](std::vector<std::string>& toks) {
      for (auto& t : toks) {
        auto chars = utf8_chars(t);
        size_t b = 0, e = chars.size();
        while (b < start && b < e && chars[b] == content) ++b;
        while (chars.size() - e < stop && e > b && chars[e - 1] == content) --e;
        std::string r;
        for (size_t i = b; i < e; ++i) r += chars[i];
        t = std::move(r);
      }
    });
    return;
  }
  fail(fmt::format("unsupported decoder '{}'", type));
}

void fill_byte_ids(const model& m, int32_t* ids) {
  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab.find(byte_token(static_cast<uint8_t>(b)));
    ids[b] = it == m.vocab.end() ? -1 : it->second;
  }
}

void index_vocab(model& m) {
  for (auto& [tok, id] : m.vocab) {
    if (id < 0) fail(fmt::format("negative id {} for token '{}'", id, tok));
    if (static_cast<size_t>(id) >= m.id_to_token.size()) {
      if (static_cast<size_t>(id) > m.vocab.size() * 4 + 1024) fail(fmt::format("id {} is far beyond the vocabulary size", id));
      m.id_to_token.resize(static_cast<size_t>(id) + 1);
    }
    m.id_to_token[static_cast<size_t>(id)] = tok;
  }
}

std::unique_ptr<model> make_model(const json& j) {
  std::string type = j.value("type", std::string());
  if (type.empty()) {
    // Older files omit the type: BPE has merges, Unigram a list vocabulary.
    if (j.contains("merges")) type = "BPE";
    else if (j.contains("vocab") && j.at("vocab").is_array()) type = "Unigram";
  }
  if (type == "BPE") {
    auto m = std::make_unique<bpe_model>();
    for (auto& [tok, id] : need(j, "vocab", "BPE model").items()) m->vocab[tok] = id.get<int32_t>();
    index_vocab(*m);
    if (j.contains("dropout") && !j.at("dropout").is_null() && j.at("dropout").get<double>() != 0.0)
      fail("BPE model: dropout is not supported");
    auto str_or = [&](const char* k) {
      return j.contains(k) && j.at(k).is_string() ? j.at(k).get<std::string>() : std::string();
    };
    std::string unk = str_or("unk_token");
    if (!unk.empty()) {
      auto it = m->vocab.find(unk);
      if (it == m->vocab.end()) fail(fmt::format("BPE model: unk_token '{}' is not in the vocabulary", unk));
      m->unk_id = it->second;
    }
    m->prefix = str_or("continuing_subword_prefix");
    m->suffix = str_or("end_of_word_suffix");
    m->fuse_unk = j.value("fuse_unk", false);
    m->byte_fallback = j.value("byte_fallback", false);
    m->ignore_merges = j.value("ignore_merges", false);
    fill_byte_ids(*m, m->byte_ids);
    int32_t rank = 0;
    for (auto& mj : need(j, "merges", "BPE model")) {
      std::string a, b;
      if (mj.is_string()) {
        std::string s = mj.get<std::string>();
        size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) fail(fmt::format("BPE merge {} '{}' is not two tokens", rank, s));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mj.is_array() && mj.size() == 2) {
        a = mj[0].get<std::string>();
        b = mj[1].get<std::string>();
      } else {
        fail(fmt::format("BPE merge {} is neither \"a b\" nor [a, b]", rank));
      }
      auto ia = m->vocab.find(a), ib = m->vocab.find(b);
      std::string joined = a + (m->prefix.empty() || b.compare(0, m->prefix.size(), m->prefix) != 0
                                    ? b : b.substr(m->prefix.size()));
      auto in = m->vocab.find(joined);
      if (ia == m->vocab.end() || ib == m->vocab.end() || in == m->vocab.end())
        fail(fmt::format("BPE merge {} ('{}' '{}') uses a token not in the vocabulary", rank, a, b));
      m->merges.emplace(bpe_model::key(ia->second, ib->second), bpe_model::merge{rank, in->second});
      ++rank;
    }
    return m;
  }
  if (type == "Unigram") {
    auto m = std::make_unique<unigram_model>();
    int32_t id = 0;
    m->min_score = 0;
    for (auto& e : need(j, "vocab", "Unigram model")) {
      if (!e.is_array() || e.size() != 2) fail(fmt::format("Unigram vocab entry {} is not [piece, score]", id));
      std::string tok = e[0].get<std::string>();
      double score = e[1].get<double>();
      m->vocab.emplace(tok, id);
      m->id_to_token.push_back(tok);
      m->scores.push_back(score);
      m->min_score = id == 0 ? score : std::min(m->min_score, score);
      if (!tok.empty()) m->trie_insert(tok, m->vocab.at(tok));
      ++id;
    }
    if (j.contains("unk_id") && !j.at("unk_id").is_null()) {
      m->unk_id = j.at("unk_id").get<int32_t>();
      if (m->unk_id < 0 || m->unk_id >= id) fail(fmt::format("Unigram model: unk_id {} is out of range", m->unk_id));
    }
    m->byte_fallback = j.value("byte_fallback", false);
    fill_byte_ids(*m, m->byte_ids);
    return m;
  }
  fail(fmt::format("unsupported model type '{}'", type.empty() ? "(none)" : type));
}

void make_post_processor(const json& j, tokenizer_impl& t) {
  std::string type = need(j, "type", "post_processor").get<std::string>();
  if (type == "Sequence") {
    for (auto& p : need(j, "processors", "Sequence post_processor")) make_post_processor(p, t);
    return;
  }
  if (type == "ByteLevel") return;  // offsets only; ids unchanged
  if (type == "TemplateProcessing") {
    const json& specials = need(j, "special_tokens", "TemplateProcessing");
    bool seen_a = false;
    for (auto& item : need(j, "single", "TemplateProcessing")) {
      if (item.contains("Sequence")) {
        seen_a = true;
        continue;
      }
      std::string name = need(need(item, "SpecialToken", "TemplateProcessing item"), "id", "SpecialToken").get<std::string>();
      if (!specials.contains(name)) fail(fmt::format("TemplateProcessing: special token '{}' is not declared", name));
      auto& dst = seen_a ? t.post_after : t.post_before;
      for (auto& id : need(specials.at(name), "ids", "TemplateProcessing special token")) dst.push_back(id.get<int32_t>());
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    t.post_before.push_back(need(j, "cls", type)[1].get<int32_t>());
    t.post_after.push_back(need(j, "sep", type)[1].get<int32_t>());
    return;
  }
  fail(fmt::format("unsupported post_processor '{}'", type));
}

}  // namespace

std::vector<tokenizer_impl::segment> tokenizer_impl::split_added(std::string_view text, bool normalized_kind) const {
  std::vector<segment> out;
  size_t last = 0;  // end of the previous segment
  size_t i = 0;
  while (i < text.size()) {
    long best = -1;
    for (size_t k = 0; k < added.size(); ++k) {
      const auto& a = added[k];
      if (a.normalized != normalized_kind || a.content.empty()) continue;
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      if (best >= 0 && added[static_cast<size_t>(best)].content.size() >= a.content.size()) continue;
      if (a.single_word) {
        size_t e = i + a.content.size();
        bool left_ok = true;
        if (i > 0) {
          size_t k2 = i - 1;
          while (k2 > 0 && (static_cast<unsigned char>(text[k2]) & 0xC0) == 0x80) --k2;
          left_ok = !is_word_char(text, k2);
        }
        bool right_ok = e >= text.size() || !is_word_char(text, e);
        if (!left_ok || !right_ok) continue;
      }
      best = static_cast<long>(k);
    }
    if (best < 0) {
      size_t n = utf8_char_length(text, i);
      i += n ? n : 1;
      continue;
    }
    const auto& a = added[static_cast<size_t>(best)];
    size_t b = i, e = i + a.content.size();
    if (a.lstrip) {
      while (b > last) {
        size_t k2 = b - 1;
        while (k2 > last && (static_cast<unsigned char>(text[k2]) & 0xC0) == 0x80) --k2;
        size_t n;
        if (!is_unicode_whitespace(decode_utf8(text, k2, &n))) break;
        b = k2;
      }
    }
    if (a.rstrip) {
      while (e < text.size()) {
        size_t n;
        if (!is_unicode_whitespace(decode_utf8(text, e, &n))) break;
        e += n;
      }
    }
    if (b > last) out.push_back({last, b, -1});
    out.push_back({b, e, best});
    last = i = e;
  }
  if (last < text.size()) out.push_back({last, text.size(), -1});
  return out;
}

status tokenizer_impl::encode_segment(std::string text, bool at_origin, std::vector<int32_t>& out) const {
  if (normalizer) {
    GG_ASSIGN_OR_RETURN(text, normalizer(std::move(text)));
  }
  for (auto& seg : split_added(text, true)) {
    if (seg.added >= 0) {
      out.push_back(added[static_cast<size_t>(seg.added)].id);
      continue;
    }
    std::vector<piece> pieces{{text.substr(seg.begin, seg.end - seg.begin), at_origin && seg.begin == 0}};
    if (pre_tokenizer) GG_RETURN_IF_ERROR(pre_tokenizer(pieces));
    for (auto& p : pieces)
      if (!p.text.empty()) m->encode(p.text, out);
  }
  return status::ok();
}

expected<tokenizer> tokenizer::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return invalid_input("{}: cannot open the tokenizer file", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return from_json(ss.str(), path);
}

expected<tokenizer> tokenizer::from_json(std::string_view text, const std::string& name) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return invalid_input("{}: not a JSON object", name);
  auto impl = std::make_shared<tokenizer_impl>();
  impl->name = name;
  try {
    if (!j.contains("model")) fail("no 'model'");
    impl->m = make_model(j.at("model"));
    if (j.contains("added_tokens") && j.at("added_tokens").is_array()) {
      for (auto& a : j.at("added_tokens")) {
        added_token t{need(a, "id", "added token").get<int32_t>(), need(a, "content", "added token").get<std::string>(),
                      a.value("single_word", false), a.value("lstrip", false), a.value("rstrip", false),
                      a.value("normalized", false), a.value("special", false)};
        if (t.id < 0 || static_cast<size_t>(t.id) > impl->m->id_to_token.size() + 1000000)
          fail(fmt::format("added token '{}' has id {} out of range", t.content, t.id));
        impl->added_by_id[t.id] = impl->added.size();
        impl->added_by_content[t.content] = t.id;
        impl->added.push_back(std::move(t));
      }
    }
    if (j.contains("normalizer") && !j.at("normalizer").is_null()) impl->normalizer = make_normalizer(j.at("normalizer"));
    if (j.contains("pre_tokenizer") && !j.at("pre_tokenizer").is_null())
      impl->pre_tokenizer = make_pre_tokenizer(j.at("pre_tokenizer"));
    if (j.contains("post_processor") && !j.at("post_processor").is_null())
      make_post_processor(j.at("post_processor"), *impl);
    if (j.contains("decoder") && !j.at("decoder").is_null()) {
      add_decoders(j.at("decoder"), impl->decoders);
      impl->has_decoder = true;
    }
    // Normalized added tokens are matched on normalized text: normalize their content once.
    for (auto& a : impl->added) {
      if (!a.normalized || !impl->normalizer) continue;
      auto n = impl->normalizer(a.content);
      if (n) a.content = std::move(n).value();
    }
  } catch (const load_error& e) {
    return invalid_input("{}: {}", name, e.what);
  } catch (const json::exception& e) {
    return invalid_input("{}: unexpected structure ({})", name, e.what());
  }
  tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

expected<std::vector<int32_t>> tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (!is_valid_utf8(text))
    return invalid_input("text to tokenize is not valid UTF-8 (byte {})", valid_utf8_prefix(text));
  const auto& t = *impl_;
  std::vector<int32_t> out;
  if (add_special_tokens) out = t.post_before;
  for (auto& seg : t.split_added(text, false)) {
    if (seg.added >= 0) {
      out.push_back(t.added[static_cast<size_t>(seg.added)].id);
      continue;
    }
    GG_RETURN_IF_ERROR(
        t.encode_segment(std::string(text.substr(seg.begin, seg.end - seg.begin)), seg.begin == 0, out));
  }
  if (add_special_tokens) out.insert(out.end(), t.post_after.begin(), t.post_after.end());
  return out;
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const auto& t = *impl_;
  std::vector<std::string> toks;
  for (int32_t id : ids) {
    auto it = t.added_by_id.find(id);
    if (it != t.added_by_id.end()) {
      if (skip_special_tokens && t.added[it->second].special) continue;
      toks.push_back(t.added[it->second].content);
      continue;
    }
    if (id < 0 || static_cast<size_t>(id) >= t.m->id_to_token.size() || t.m->id_to_token[id].empty()) continue;
    toks.push_back(t.m->id_to_token[static_cast<size_t>(id)]);
  }
  if (!t.has_decoder) {
    std::string out;
    for (size_t i = 0; i < toks.size(); ++i) out += (i ? " " : "") + toks[i];
    return out;
  }
  for (auto& d : t.decoders) d(toks);
  std::string out;
  for (auto& s : toks) out += s;
  return out;
}

size_t tokenizer::vocab_size() const {
  size_t n = impl_->m->id_to_token.size();
  for (auto& a : impl_->added) n = std::max(n, static_cast<size_t>(a.id) + 1);
  return n;
}

int32_t tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  auto v = impl_->m->vocab.find(std::string(token));
  return v == impl_->m->vocab.end() ? -1 : v->second;
}

std::string tokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  if (id < 0 || static_cast<size_t>(id) >= impl_->m->id_to_token.size()) return {};
  return impl_->m->id_to_token[static_cast<size_t>(id)];
}

bool tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

std::string decode_stream::step(int32_t id) {
  ids_.push_back(id);
  std::string s = tok_.decode(ids_, skip_special_);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  bool ends_incomplete = s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0;
  if (s.size() <= prefix_.size() || ends_incomplete) return {};
  std::string fresh = s.compare(0, prefix_.size(), prefix_) == 0 ? s.substr(prefix_.size()) : s;
  size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<long>(prefix_index_));
  prefix_ = tok_.decode(ids_, skip_special_);
  prefix_index_ = new_prefix_index;
  return fresh;
}

}  // namespace gpugrid::llm
