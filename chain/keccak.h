// Keccak-256 as Ethereum uses it (the original Keccak padding, not NIST SHA3-256), from
// Crypto++. Pure; any thread.
#pragma once

#include <string_view>

#include "chain/bytes.h"

namespace gpugrid::chain {

hash32 keccak256(const uint8_t* p, size_t n);
inline hash32 keccak256(const bytes& b) { return keccak256(b.data(), b.size()); }
inline hash32 keccak256(std::string_view s) { return keccak256(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

}  // namespace gpugrid::chain
