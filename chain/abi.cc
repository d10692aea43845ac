#include "chain/abi.h"

#include <cstring>

#include "chain/keccak.h"

namespace gpugrid::chain::abi {

std::array<uint8_t, 4> selector(std::string_view signature) {
  hash32 h = keccak256(signature);
  return {h[0], h[1], h[2], h[3]};
}

call_encoder::call_encoder(std::string_view signature) : selector_(selector(signature)) {}

call_encoder& call_encoder::add_uint(const u256& v) {
  args_.push_back({to_word(v), false, {}});
  return *this;
}

call_encoder& call_encoder::add_address(const address& a) {
  arg x;
  std::memcpy(x.word.data() + 12, a.b.data(), 20);
  args_.push_back(x);
  return *this;
}

call_encoder& call_encoder::add_bool(bool b) { return add_uint(b ? 1 : 0); }

call_encoder& call_encoder::add_bytes32(const hash32& h) {
  args_.push_back({h, false, {}});
  return *this;
}

call_encoder& call_encoder::add_bytes(const bytes& b) {
  arg x;
  x.dynamic = true;
  hash32 len = to_word(u256(b.size()));
  x.tail.assign(len.begin(), len.end());
  x.tail.insert(x.tail.end(), b.begin(), b.end());
  x.tail.resize(32 + (b.size() + 31) / 32 * 32, 0);
  args_.push_back(std::move(x));
  return *this;
}

call_encoder& call_encoder::add_string(std::string_view s) {
  return add_bytes(bytes(reinterpret_cast<const uint8_t*>(s.data()), reinterpret_cast<const uint8_t*>(s.data()) + s.size()));
}

bytes call_encoder::finish() const {
  bytes out(selector_.begin(), selector_.end());
  size_t offset = 32 * args_.size();
  for (const auto& a : args_) {
    hash32 w = a.dynamic ? to_word(u256(offset)) : a.word;
    out.insert(out.end(), w.begin(), w.end());
    if (a.dynamic) offset += a.tail.size();
  }
  for (const auto& a : args_) out.insert(out.end(), a.tail.begin(), a.tail.end());
  return out;
}

namespace {

expected<const uint8_t*> word_at(const bytes& r, size_t word, const std::string& what) {
  if (r.size() < 32 * (word + 1))
    return invalid_input("{}: the result has {} bytes, too short for word {}", what, r.size(), word);
  return r.data() + 32 * word;
}

}  // namespace

expected<u256> decode_uint(const bytes& r, size_t word, const std::string& what) {
  GG_ASSIGN_OR_RETURN(const uint8_t* p, word_at(r, word, what));
  return from_be(p, 32);
}

expected<address> decode_address(const bytes& r, size_t word, const std::string& what) {
  GG_ASSIGN_OR_RETURN(const uint8_t* p, word_at(r, word, what));
  for (int i = 0; i < 12; ++i)
    if (p[i]) return invalid_input("{}: word {} is not an address (high bytes set)", what, word);
  address a;
  std::memcpy(a.b.data(), p + 12, 20);
  return a;
}

expected<bool> decode_bool(const bytes& r, size_t word, const std::string& what) {
  GG_ASSIGN_OR_RETURN(u256 v, decode_uint(r, word, what));
  if (v > 1) return invalid_input("{}: word {} is not a bool", what, word);
  return v == 1;
}

expected<hash32> decode_bytes32(const bytes& r, size_t word, const std::string& what) {
  GG_ASSIGN_OR_RETURN(const uint8_t* p, word_at(r, word, what));
  hash32 h{};
  std::memcpy(h.data(), p, 32);
  return h;
}

std::string revert_reason(const bytes& d) {
  static const uint8_t kError[4] = {0x08, 0xc3, 0x79, 0xa0};
  if (d.size() < 4 + 64 || std::memcmp(d.data(), kError, 4) != 0) return "";
  u256 off = from_be(d.data() + 4, 32);
  if (off != 32) return "";
  u256 len = from_be(d.data() + 36, 32);
  if (len > d.size() - 68) return "";
  std::string s(d.begin() + 68, d.begin() + 68 + static_cast<size_t>(len));
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  return s;
}

}  // namespace gpugrid::chain::abi
