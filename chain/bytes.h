// Byte strings, hex and 256-bit unsigned integers as the EVM world writes them.
//
// u256 is Boost.Multiprecision's unsigned 256-bit integer (wraps on overflow, so callers that
// add untrusted values check bounds; every parser here does). Hex strings take an optional
// "0x"; JSON-RPC quantities are "0x" + hex without leading zeros. Amounts are decimal strings
// in the chain's token with `decimals` places ("1.5" = 1.5 * 10^18 base units) or a whole
// number of base units with the suffix "wei".
//
// Pure functions; any thread. Parsers fail with invalid_input naming `what`.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/multiprecision/cpp_int.hpp>

#include "base/status.h"

namespace gpugrid::chain {

using bytes = std::vector<uint8_t>;
using hash32 = std::array<uint8_t, 32>;
using u256 = boost::multiprecision::uint256_t;

std::string to_hex(const uint8_t* p, size_t n, bool prefix = true);
inline std::string to_hex(const bytes& b, bool prefix = true) { return to_hex(b.data(), b.size(), prefix); }
template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& a, bool prefix = true) {
  return to_hex(a.data(), N, prefix);
}

// Even number of hex digits, optional 0x.
expected<bytes> from_hex(std::string_view s, const std::string& what);
// Exactly 32 bytes.
expected<hash32> hash_from_hex(std::string_view s, const std::string& what);

// Big-endian, no leading zero bytes (zero is empty): RLP's integers.
bytes to_minimal_be(const u256& v);
// Big-endian in 32 bytes: an ABI word.
hash32 to_word(const u256& v);
// At most 32 big-endian bytes.
u256 from_be(const uint8_t* p, size_t n);

// "0x1a" (a JSON-RPC quantity); "0x0" for zero.
std::string to_quantity(const u256& v);
// "0x" + 1..64 hex digits.
expected<u256> parse_quantity(std::string_view s, const std::string& what);
// Decimal digits, or 0x + hex; at most 2^256 - 1.
expected<u256> parse_uint(std::string_view s, const std::string& what);
std::string to_decimal(const u256& v);

// "1.25" -> 1.25 * 10^decimals; "1000wei" -> 1000. At most `decimals` fractional digits.
expected<u256> parse_amount(std::string_view s, int decimals, const std::string& what);
// 1250000000000000000 -> "1.25" (decimals 18); no trailing zeros, "0" for zero.
std::string format_amount(const u256& v, int decimals);

}  // namespace gpugrid::chain
