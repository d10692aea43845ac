#include "chain/rlp.h"

namespace gpugrid::chain::rlp {

namespace {

void put_length(bytes& out, size_t len, uint8_t short_base, uint8_t long_base) {
  if (len <= 55) {
    out.push_back(static_cast<uint8_t>(short_base + len));
    return;
  }
  bytes be = to_minimal_be(u256(len));
  out.push_back(static_cast<uint8_t>(long_base + be.size()));
  out.insert(out.end(), be.begin(), be.end());
}

}  // namespace

bytes encode_bytes(const uint8_t* p, size_t n) {
  if (n == 1 && p[0] < 0x80) return bytes{p[0]};
  bytes out;
  out.reserve(n + 9);
  put_length(out, n, 0x80, 0xb7);
  out.insert(out.end(), p, p + n);
  return out;
}

bytes encode_uint(const u256& v) { return encode_bytes(to_minimal_be(v)); }

bytes encode_list(const std::vector<bytes>& items) {
  size_t total = 0;
  for (const auto& i : items) total += i.size();
  bytes out;
  out.reserve(total + 9);
  put_length(out, total, 0xc0, 0xf7);
  for (const auto& i : items) out.insert(out.end(), i.begin(), i.end());
  return out;
}

}  // namespace gpugrid::chain::rlp
