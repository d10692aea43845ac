#include "chain/address.h"

#include <catch2/catch.hpp>

#include "chain/test_vectors.h"

using namespace gpugrid::chain;

TEST_CASE("EIP-55 checksums", "[chain]") {
  for (const auto& v : testing::vectors()["eip55"]) {
    std::string want = v;
    std::string lower = want;
    for (char& c : lower) c = static_cast<char>(std::tolower(c));
    auto a = parse_address(lower, "a");
    REQUIRE(a);
    CHECK(a->checksummed() == want);
    CHECK(parse_address(want, "a"));  // the checksummed form parses
  }
}

TEST_CASE("addresses with a wrong checksum or shape are refused", "[chain]") {
  CHECK(!parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "a"));  // last letter's case flipped
  CHECK(parse_address("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", "a"));   // all upper: no checksum
  CHECK(!parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae", "a"));   // 39 digits
  CHECK(!parse_address("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00", "a"));  // no 0x
  CHECK(!parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg", "a"));
  auto err = parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "--provider");
  CHECK(err.error().message().find("--provider") != std::string::npos);
  CHECK(err.error().message().find("checksum") != std::string::npos);
}
