#include "net/hash.h"

#include <sodium.h>

#include <cstdio>
#include <cstdlib>

namespace gpugrid::net {

static_assert(sizeof(crypto_generichash_state) <= 384, "blake2b_hasher::state_ is too small");

void ensure_sodium() {
  static const bool ok = [] { return sodium_init() >= 0; }();
  if (!ok) {
    std::fputs("gpugrid: libsodium could not initialise (no random source?)\n", stderr);
    std::abort();
  }
}

digest32 blake2b_256(const void* data, size_t n) {
  ensure_sodium();
  digest32 d{};
  crypto_generichash(d.data(), d.size(), static_cast<const unsigned char*>(data), n, nullptr, 0);
  return d;
}

blake2b_hasher::blake2b_hasher() {
  ensure_sodium();
  crypto_generichash_init(reinterpret_cast<crypto_generichash_state*>(state_), nullptr, 0, 32);
}

void blake2b_hasher::update(const void* data, size_t n) {
  crypto_generichash_update(reinterpret_cast<crypto_generichash_state*>(state_),
                            static_cast<const unsigned char*>(data), n);
}

digest32 blake2b_hasher::finish() {
  digest32 d{};
  crypto_generichash_final(reinterpret_cast<crypto_generichash_state*>(state_), d.data(), d.size());
  return d;
}

std::string to_hex(const void* data, size_t n) {
  std::string s(2 * n + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), static_cast<const unsigned char*>(data), n);
  s.pop_back();
  return s;
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

status hex_decode(std::string_view hex, uint8_t* out, size_t n, const std::string& what) {
  if (hex.size() != 2 * n)
    return invalid_input("{}: expected {} hex digits, got {} characters", what, 2 * n, hex.size());
  for (size_t i = 0; i < n; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return invalid_input("{}: '{}' is not a hex digit", what, hi < 0 ? hex[2 * i] : hex[2 * i + 1]);
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return status::ok();
}

}  // namespace gpugrid::net
