// The chain parsers take input from the network and from files: random mutations of valid
// input must give a value or an error, never an exception or a crash (a cheap, seeded stand-in
// for a fuzz run; run under ASan to catch memory errors too).
#include <random>

#include <catch2/catch.hpp>

#include "chain/rpc_client.h"
#include "chain/voucher.h"

using namespace gpugrid::chain;

namespace {

std::string mutate(std::string s, std::mt19937& rng) {
  std::uniform_int_distribution<int> op(0, 3), byte(0, 255);
  int edits = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < edits && !s.empty(); ++i) {
    size_t at = rng() % s.size();
    switch (op(rng)) {
      case 0: s[at] = static_cast<char>(byte(rng)); break;
      case 1: s.erase(at, 1 + rng() % 8); break;
      case 2: s.insert(at, 1, "{}[]\",:0x9\\"[rng() % 12]); break;
      default: s.resize(at); break;
    }
  }
  return s;
}

}  // namespace

TEST_CASE("chain parsers survive mutated input", "[chain]") {
  std::mt19937 rng(17);
  secret_key k = secret_key::generate();
  address contract;
  contract.b[3] = 0x42;
  std::string voucher = voucher_to_json(sign_voucher(k, {5, 137, 1000, 2}, contract));
  std::string receipt = R"({"transactionHash":"0x)" + std::string(64, 'a') +
                        R"(","blockNumber":"0x10","status":"0x1","gasUsed":"0x5208","effectiveGasPrice":"0x1",)"
                        R"("contractAddress":null,"logs":[{"address":"0x)" + std::string(40, 'b') +
                        R"(","topics":["0x)" + std::string(64, 'c') + R"("],"data":"0x0102","blockNumber":"0x10",)"
                        R"("transactionHash":"0x)" + std::string(64, 'a') + R"("}]})";
  REQUIRE(parse_voucher_json(voucher, "v"));
  REQUIRE(parse_receipt(nlohmann::json::parse(receipt), "r"));
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string v = mutate(voucher, rng);
    CHECK_NOTHROW([&] {
      auto sv = parse_voucher_json(v, "v");
      if (sv) {
        ++accepted;
        (void)voucher_signer(*sv);
      }
    }());
    std::string r = mutate(receipt, rng);
    CHECK_NOTHROW([&] {
      auto j = nlohmann::json::parse(r, nullptr, false);
      if (!j.is_discarded()) (void)parse_receipt(j, "r");
    }());
    std::string a = mutate("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", rng);
    CHECK_NOTHROW((void)parse_address(a, "a"));
    CHECK_NOTHROW((void)parse_amount(mutate("12.345678", rng), 18, "x"));
    CHECK_NOTHROW((void)parse_uint(mutate("0x1234567890abcdef", rng), "x"));
  }
  CHECK(accepted < 3000);
}
