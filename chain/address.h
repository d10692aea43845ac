// Ethereum addresses: 20 bytes, written with the EIP-55 mixed-case checksum.
//
// parse_address takes "0x" + 40 hex digits; all-lower or all-upper case is accepted as is, a
// mixed-case string must carry a correct EIP-55 checksum (a typo is caught, not paid to).
// Values; any thread.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "chain/bytes.h"

namespace gpugrid::chain {

struct address {
  std::array<uint8_t, 20> b{};

  bool is_zero() const;
  // EIP-55: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".
  std::string checksummed() const;
  bool operator==(const address& o) const { return b == o.b; }
  bool operator!=(const address& o) const { return b != o.b; }
  bool operator<(const address& o) const { return b < o.b; }
};

expected<address> parse_address(std::string_view s, const std::string& what);

// The address of an uncompressed secp256k1 public key given as X || Y (64 bytes).
address address_of_public_key(const std::array<uint8_t, 64>& xy);

}  // namespace gpugrid::chain
