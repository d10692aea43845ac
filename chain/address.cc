#include "chain/address.h"

#include <cctype>

#include "chain/keccak.h"

namespace gpugrid::chain {

bool address::is_zero() const {
  for (uint8_t x : b)
    if (x) return false;
  return true;
}

std::string address::checksummed() const {
  std::string lower = to_hex(b.data(), b.size(), false);
  hash32 h = keccak256(lower);
  std::string out = "0x";
  for (size_t i = 0; i < lower.size(); ++i) {
    char c = lower[i];
    int nibble = (h[i / 2] >> (i % 2 ? 0 : 4)) & 15;
    out += (c >= 'a' && nibble >= 8) ? static_cast<char>(std::toupper(c)) : c;
  }
  return out;
}

expected<address> parse_address(std::string_view s, const std::string& what) {
  if (s.size() != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
    return invalid_input("{}: '{}' is not an address (0x and 40 hex digits)", what, s.substr(0, 60));
  GG_ASSIGN_OR_RETURN(bytes raw, from_hex(s, what));
  address a;
  std::copy(raw.begin(), raw.end(), a.b.begin());
  bool has_lower = false, has_upper = false;
  for (size_t i = 2; i < s.size(); ++i) {
    has_lower = has_lower || (s[i] >= 'a' && s[i] <= 'f');
    has_upper = has_upper || (s[i] >= 'A' && s[i] <= 'F');
  }
  if (has_lower && has_upper && a.checksummed().substr(2) != s.substr(2))
    return invalid_input("{}: '{}' has a wrong EIP-55 checksum (a mistyped address?)", what, s);
  return a;
}

address address_of_public_key(const std::array<uint8_t, 64>& xy) {
  hash32 h = keccak256(xy.data(), xy.size());
  address a;
  std::copy(h.begin() + 12, h.end(), a.b.begin());
  return a;
}

}  // namespace gpugrid::chain
