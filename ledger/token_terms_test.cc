// Generation receipts: token terms packed into the fixed-size receipt, priced exactly.
#include <catch2/catch.hpp>

#include "ledger/receipt.h"

using namespace gpugrid::ledger;

TEST_CASE("token terms round-trip through a receipt and price per token", "[ledger][gen]") {
  token_terms t{1234, 56, 2000, 20000};  // 0.002 and 0.02 credits per 1000 tokens
  auto back = token_terms::unpack(t.pack());
  CHECK(back.prompt_tokens == 1234);
  CHECK(back.generated_tokens == 56);
  CHECK(back.prompt_micros_per_1k == 2000);
  CHECK(back.generated_micros_per_1k == 20000);
  // 1234 * 2000 / 1000 + 56 * 20000 / 1000 = 2468 + 1120
  CHECK(t.price_micros() == 3588);
  CHECK(token_terms{1, 0, 499, 0}.price_micros() == 0);
  CHECK(token_terms{1, 0, 500, 0}.price_micros() == 1);

  receipt r;
  r.kind = receipt_kind::generation;
  r.input_digest = t.pack();
  r.price_micros = t.price_micros();
  auto parsed = receipt::parse(r.canonical_bytes(), "test");
  REQUIRE(parsed.has_value());
  CHECK(parsed->kind == receipt_kind::generation);
  CHECK(token_terms::unpack(parsed->input_digest).generated_tokens == 56);
  CHECK(std::string(to_string(receipt_kind::generation)) == "generation");
}
