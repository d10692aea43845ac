#include "chain/bytes.h"

#include <catch2/catch.hpp>

using namespace gpugrid::chain;

TEST_CASE("hex round trip and refusals", "[chain]") {
  auto b = from_hex("0x00ff10", "x");
  REQUIRE(b);
  CHECK(to_hex(*b) == "0x00ff10");
  CHECK(!from_hex("0x0", "x"));
  CHECK(!from_hex("zz", "x"));
  CHECK(from_hex("ABcd", "x").value() == bytes{0xab, 0xcd});
  CHECK(!hash_from_hex("0x00", "x"));
}

TEST_CASE("quantities and whole numbers", "[chain]") {
  CHECK(to_quantity(0) == "0x0");
  CHECK(to_quantity(26) == "0x1a");
  CHECK(to_quantity(256) == "0x100");
  CHECK(parse_quantity("0x1a", "q").value() == 26);
  CHECK(!parse_quantity("26", "q"));
  CHECK(!parse_quantity("0x", "q"));
  u256 max = ~u256(0);
  CHECK(parse_uint(to_decimal(max), "n").value() == max);
  CHECK(!parse_uint(to_decimal(max) + "0", "n"));
  CHECK(!parse_uint("0x1" + std::string(64, '0'), "n"));
  CHECK(!parse_uint("12a", "n"));
  CHECK(to_minimal_be(0).empty());
  CHECK(to_minimal_be(0x1234) == bytes{0x12, 0x34});
  hash32 w = to_word(0x1234);
  CHECK(from_be(w.data(), 32) == 0x1234);
}

TEST_CASE("amounts in token units", "[chain]") {
  CHECK(parse_amount("1.5", 18, "a").value() == u256("1500000000000000000"));
  CHECK(parse_amount("0.000000000000000001", 18, "a").value() == 1);
  CHECK(parse_amount("2", 18, "a").value() == u256("2000000000000000000"));
  CHECK(parse_amount(".5", 18, "a").value() == u256("500000000000000000"));
  CHECK(parse_amount("1000wei", 18, "a").value() == 1000);
  CHECK(!parse_amount("0.0000000000000000001", 18, "a"));
  CHECK(!parse_amount("1e18", 18, "a"));
  CHECK(!parse_amount("-1", 18, "a"));
  CHECK(!parse_amount(".", 18, "a"));
  CHECK(!parse_amount("", 18, "a"));
  CHECK(format_amount(u256("1500000000000000000"), 18) == "1.5");
  CHECK(format_amount(1, 18) == "0.000000000000000001");
  CHECK(format_amount(0, 18) == "0");
  CHECK(format_amount(u256("2000000000000000000"), 18) == "2");
}
