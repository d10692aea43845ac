// Solidity/Vyper ABI encoding of calls and decoding of results (the contract ABI spec):
// static words (uint256, address, bool, bytes32) and the dynamic bytes and string, as heads
// and tails. decode_* read one 32-byte word of a result and fail with invalid_input when the
// result is too short or the word is not a valid value of the type. Pure; any thread.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "chain/address.h"
#include "chain/bytes.h"

namespace gpugrid::chain::abi {

// The first four bytes of keccak256("name(type,...)").
std::array<uint8_t, 4> selector(std::string_view signature);

class call_encoder {
 public:
  explicit call_encoder(std::string_view signature);
  call_encoder& add_uint(const u256& v);
  call_encoder& add_address(const address& a);
  call_encoder& add_bool(bool b);
  call_encoder& add_bytes32(const hash32& h);
  call_encoder& add_bytes(const bytes& b);         // dynamic
  call_encoder& add_string(std::string_view s);    // dynamic
  // Selector, heads, then tails.
  bytes finish() const;

 private:
  struct arg {
    hash32 word{};
    bool dynamic = false;
    bytes tail;  // length word + padded data
  };
  std::array<uint8_t, 4> selector_;
  std::vector<arg> args_;
};

expected<u256> decode_uint(const bytes& result, size_t word, const std::string& what);
expected<address> decode_address(const bytes& result, size_t word, const std::string& what);
expected<bool> decode_bool(const bytes& result, size_t word, const std::string& what);
expected<hash32> decode_bytes32(const bytes& result, size_t word, const std::string& what);

// The message of Error(string) revert data ("" when the data is not that shape).
std::string revert_reason(const bytes& data);

}  // namespace gpugrid::chain::abi
