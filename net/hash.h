// BLAKE2b-256: content addresses of models and digests of tensors and frames (libsodium).
//
// All functions are pure and thread-safe. sodium_init() is called once before first use.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace gpugrid::net {

using digest32 = std::array<uint8_t, 32>;

digest32 blake2b_256(const void* data, size_t n);
inline digest32 blake2b_256(std::string_view bytes) { return blake2b_256(bytes.data(), bytes.size()); }

// Incremental BLAKE2b-256 over several pieces; the digest equals blake2b_256 of their concatenation.
class blake2b_hasher {
 public:
  blake2b_hasher();
  void update(const void* data, size_t n);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  // Finishes the hash; the hasher must not be used afterwards.
  digest32 finish();

 private:
  alignas(64) unsigned char state_[384];  // crypto_generichash_state (size checked in hash.cc)
};

// Lower-case hex.
std::string to_hex(const void* data, size_t n);
template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& a) { return to_hex(a.data(), N); }
// Parses exactly 2*N hex digits (either case); `what` names the value in the error.
template <size_t N>
expected<std::array<uint8_t, N>> from_hex(std::string_view hex, const std::string& what);
status hex_decode(std::string_view hex, uint8_t* out, size_t n, const std::string& what);

template <size_t N>
expected<std::array<uint8_t, N>> from_hex(std::string_view hex, const std::string& what) {
  std::array<uint8_t, N> out{};
  GG_RETURN_IF_ERROR(hex_decode(hex, out.data(), N, what));
  return out;
}

// Makes sure libsodium is initialised (idempotent, thread-safe). Aborts only if libsodium
// cannot initialise at all (no usable random source), which nothing here could recover from.
void ensure_sodium();

}  // namespace gpugrid::net
