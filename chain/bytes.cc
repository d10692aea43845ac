#include "chain/bytes.h"

namespace gpugrid::chain {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view strip_0x(std::string_view s) {
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
  return s;
}

std::string shown(std::string_view s) {
  if (s.size() <= 80) return std::string(s);
  return std::string(s.substr(0, 77)) + "...";
}

const u256 kMax = ~u256(0);

}  // namespace

std::string to_hex(const uint8_t* p, size_t n, bool prefix) {
  static const char* digits = "0123456789abcdef";
  std::string out = prefix ? "0x" : "";
  out.reserve(out.size() + 2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

expected<bytes> from_hex(std::string_view s, const std::string& what) {
  std::string_view h = strip_0x(s);
  if (h.size() % 2) return invalid_input("{}: '{}' has an odd number of hex digits", what, shown(s));
  bytes out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hex_value(h[2 * i]), lo = hex_value(h[2 * i + 1]);
    if (hi < 0 || lo < 0) return invalid_input("{}: '{}' is not hex", what, shown(s));
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

expected<hash32> hash_from_hex(std::string_view s, const std::string& what) {
  GG_ASSIGN_OR_RETURN(bytes b, from_hex(s, what));
  if (b.size() != 32) return invalid_input("{}: '{}' is not 32 bytes", what, shown(s));
  hash32 h{};
  std::copy(b.begin(), b.end(), h.begin());
  return h;
}

bytes to_minimal_be(const u256& v) {
  hash32 w = to_word(v);
  size_t i = 0;
  while (i < 32 && w[i] == 0) ++i;
  return bytes(w.begin() + i, w.end());
}

hash32 to_word(const u256& v) {
  hash32 w{};
  u256 x = v;
  for (int i = 31; i >= 0 && x != 0; --i) {
    w[i] = static_cast<uint8_t>(x & 0xff);
    x >>= 8;
  }
  return w;
}

u256 from_be(const uint8_t* p, size_t n) {
  u256 v = 0;
  for (size_t i = 0; i < n && i < 32; ++i) v = (v << 8) | p[i];
  return v;
}

std::string to_quantity(const u256& v) {
  if (v == 0) return "0x0";
  std::string h = to_hex(to_minimal_be(v), false);
  if (h[0] == '0') h.erase(0, 1);
  return "0x" + h;
}

expected<u256> parse_quantity(std::string_view s, const std::string& what) {
  if (s.size() < 3 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
    return invalid_input("{}: '{}' is not a 0x-prefixed hex quantity", what, shown(s));
  return parse_uint(s, what);
}

expected<u256> parse_uint(std::string_view s, const std::string& what) {
  if (s.empty()) return invalid_input("{}: empty number", what);
  bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  std::string_view d = hex ? s.substr(2) : s;
  if (d.empty()) return invalid_input("{}: '{}' has no digits", what, shown(s));
  u256 v = 0;
  unsigned base = hex ? 16 : 10;
  for (char c : d) {
    int x = hex ? hex_value(c) : (c >= '0' && c <= '9' ? c - '0' : -1);
    if (x < 0) return invalid_input("{}: '{}' is not a {} number", what, shown(s), hex ? "hex" : "whole");
    if (v > (kMax - x) / base) return invalid_input("{}: '{}' does not fit in 256 bits", what, shown(s));
    v = v * base + x;
  }
  return v;
}

std::string to_decimal(const u256& v) { return v.str(); }

expected<u256> parse_amount(std::string_view s, int decimals, const std::string& what) {
  if (s.size() > 3 && s.substr(s.size() - 3) == "wei") {
    std::string_view n = s.substr(0, s.size() - 3);
    if (n.find_first_not_of("0123456789") != std::string_view::npos)
      return invalid_input("{}: '{}' is not a whole number of wei", what, shown(s));
    return parse_uint(n, what);
  }
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  bool digits_ok = whole.find_first_not_of("0123456789") == std::string_view::npos &&
                   frac.find_first_not_of("0123456789") == std::string_view::npos && (!whole.empty() || !frac.empty());
  if (!digits_ok || (dot != std::string_view::npos && frac.empty() && whole.empty()))
    return invalid_input("{}: '{}' is not an amount (e.g. 0.5, or 1000wei)", what, shown(s));
  if (static_cast<int>(frac.size()) > decimals)
    return invalid_input("{}: '{}' has more than {} decimal places", what, shown(s), decimals);
  std::string all(whole);
  all += frac;
  all.append(decimals - frac.size(), '0');
  size_t first = all.find_first_not_of('0');
  if (first == std::string::npos) return u256(0);
  return parse_uint(all.substr(first), what);
}

std::string format_amount(const u256& v, int decimals) {
  std::string d = v.str();
  if (decimals <= 0) return d;
  if (static_cast<int>(d.size()) <= decimals) d = std::string(decimals + 1 - d.size(), '0') + d;
  std::string whole = d.substr(0, d.size() - decimals);
  std::string frac = d.substr(d.size() - decimals);
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  return frac.empty() ? whole : whole + "." + frac;
}

}  // namespace gpugrid::chain
