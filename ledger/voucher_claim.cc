#include "ledger/voucher_claim.h"

#include <cstring>

namespace gpugrid::ledger {

namespace {

template <size_t N>
void put(std::string& out, const std::array<uint8_t, N>& a) { out.append(reinterpret_cast<const char*>(a.data()), N); }
template <size_t N>
void get(std::array<uint8_t, N>& a, const char*& p) { std::memcpy(a.data(), p, N); p += N; }

}  // namespace

std::string voucher_claim::pack() const {
  std::string out;
  out.reserve(claim_size);
  put(out, chain_id);
  put(out, contract);
  put(out, channel);
  put(out, amount);
  put(out, nonce);
  put(out, r);
  put(out, s);
  out.push_back(static_cast<char>(v));
  put(out, price);
  return out;
}

expected<voucher_claim> voucher_claim::unpack(const std::string& b, const std::string& what) {
  if (b.size() != claim_size) return invalid_input("{}: a voucher is {} bytes, got {}", what, claim_size, b.size());
  voucher_claim c;
  const char* p = b.data();
  get(c.chain_id, p);
  get(c.contract, p);
  get(c.channel, p);
  get(c.amount, p);
  get(c.nonce, p);
  get(c.r, p);
  get(c.s, p);
  c.v = static_cast<uint8_t>(*p++);
  get(c.price, p);
  if (c.v > 1) return invalid_input("{}: voucher recovery id {} is not 0 or 1", what, c.v);
  return c;
}

std::string chain_terms::pack() const {
  std::string out;
  out.reserve(terms_size);
  put(out, chain_id);
  put(out, contract);
  put(out, payee);
  put(out, price);
  return out;
}

expected<chain_terms> chain_terms::unpack(const std::string& b, const std::string& what) {
  if (b.size() != terms_size) return invalid_input("{}: chain terms are {} bytes, got {}", what, terms_size, b.size());
  chain_terms t;
  const char* p = b.data();
  get(t.chain_id, p);
  get(t.contract, p);
  get(t.payee, p);
  get(t.price, p);
  return t;
}

unsigned __int128 word_value(const word32& w) {
  for (int i = 0; i < 16; ++i)
    if (w[i] != 0) return ~static_cast<unsigned __int128>(0);
  unsigned __int128 v = 0;
  for (int i = 16; i < 32; ++i) v = (v << 8) | w[i];
  return v;
}

word32 word_of(unsigned __int128 v) {
  word32 w{};
  for (int i = 31; i >= 16; --i) {
    w[i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
  return w;
}

std::string decimal(unsigned __int128 v) {
  if (v == 0) return "0";
  std::string s;
  while (v > 0) {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  }
  return s;
}

}  // namespace gpugrid::ledger
