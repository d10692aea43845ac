#include "chain/keccak.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

TEST_CASE("keccak256 matches the reference vectors", "[chain]") {
  CHECK(to_hex(keccak256(std::string_view())) == "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
  for (const auto& v : testing::vectors()["keccak"]) {
    bytes in = testing::hex(v["in"]);
    CHECK(to_hex(keccak256(in), false) == v["out"].get<std::string>());
  }
}
