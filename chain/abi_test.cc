#include "chain/abi.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

TEST_CASE("ABI call encoding matches eth-abi", "[chain]") {
  for (const auto& v : testing::vectors()["abi"]) {
    INFO(v["signature"].get<std::string>());
    abi::call_encoder enc(v["signature"].get<std::string>());
    for (size_t i = 0; i < v["types"].size(); ++i) {
      std::string type = v["types"][i];
      const auto& a = v["args"][i];
      if (type == "address") enc.add_address(parse_address(a.get<std::string>(), "a").value());
      else if (type == "uint256") enc.add_uint(testing::num(a.get<std::string>()));
      else if (type == "bool") enc.add_bool(a.get<bool>());
      else if (type == "bytes32") enc.add_bytes32(hash_from_hex(a.get<std::string>(), "b").value());
      else if (type == "bytes") enc.add_bytes(testing::hex(a.get<std::string>()));
      else if (type == "string") enc.add_string(a.get<std::string>());
      else FAIL("unknown type " << type);
    }
    CHECK(to_hex(enc.finish(), false) == v["out"].get<std::string>());
  }
}

TEST_CASE("ABI result decoding refuses short and malformed words", "[chain]") {
  bytes r(64, 0);
  r[31] = 5;
  r[63] = 1;
  CHECK(abi::decode_uint(r, 0, "r").value() == 5);
  CHECK(abi::decode_bool(r, 1, "r").value());
  CHECK(!abi::decode_uint(r, 2, "r"));
  r[0] = 1;
  CHECK(!abi::decode_address(r, 0, "r"));
  CHECK(!abi::decode_bool(r, 0, "r"));
}

TEST_CASE("revert reasons", "[chain]") {
  abi::call_encoder e("Error(string)");
  e.add_string("channel not expired");
  CHECK(abi::revert_reason(e.finish()) == "channel not expired");
  CHECK(abi::revert_reason(bytes{1, 2, 3}).empty());
  bytes truncated = e.finish();
  truncated.resize(80);
  CHECK(abi::revert_reason(truncated).empty());
}
