// Chain terms in bids and vouchers in Execute: round trips, a malformed blob refused, and the
// bid signature covering the terms.
#include <catch2/catch.hpp>

#include "net/codec.h"
#include "net/testing.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

const identity& signer() {
  static const identity id = identity::from_seed(testing::pattern<32>(7));
  return id;
}

message round_trip(const message& m) {
  auto f = encode(m, signer(), 3);
  REQUIRE(f.has_value());
  auto d = decode(f->data(), f->size());
  REQUIRE(d.has_value());
  return d->msg;
}

ledger::chain_terms sample_terms() {
  ledger::chain_terms t;
  t.chain_id = ledger::word_of(31337);
  t.contract[0] = 0xaa;
  t.payee[19] = 0xbb;
  t.price = ledger::word_of(1000000000000000ull);
  return t;
}

}  // namespace

TEST_CASE("bids carry chain terms and the bid signature covers them", "[net][codec][voucher]") {
  bid b;
  b.job = testing::pattern<16>(1);
  b.price = 0.001;
  b.valid_ms = 5000;
  b.terms = sample_terms();
  sign_bid(b, signer());
  auto back = std::get<bid>(round_trip(b));
  REQUIRE(back.terms);
  CHECK(*back.terms == sample_terms());
  CHECK(verify_bid(back, signer().public_key()));
  back.terms->payee[19] = 0xcc;  // another wallet to pay: the signature no longer holds
  CHECK_FALSE(verify_bid(back, signer().public_key()));
  bid plain = b;  // a bid without terms signs what earlier versions signed
  plain.terms.reset();
  sign_bid(plain, signer());
  CHECK_FALSE(std::get<bid>(round_trip(plain)).terms);
  CHECK(bid_statement(plain).find("GGTERMS1") == std::string::npos);
}

TEST_CASE("Execute carries a voucher and a bad recovery id is refused", "[net][codec][voucher]") {
  execute e;
  e.job = testing::pattern<16>(2);
  e.price = 0.001;
  ledger::voucher_claim c;
  c.chain_id = ledger::word_of(31337);
  c.channel = ledger::word_of(7);
  c.amount = ledger::word_of(5000);
  c.nonce = ledger::word_of(3);
  c.r[0] = 1;
  c.s[0] = 2;
  c.v = 1;
  c.price = ledger::word_of(1000);
  e.voucher = c;
  auto back = std::get<execute>(round_trip(e));
  REQUIRE(back.voucher);
  CHECK(*back.voucher == c);
  CHECK_FALSE(std::get<execute>(round_trip(execute{})).voucher);
  e.voucher->v = 5;  // encodes as given; the decoder refuses it
  auto f = encode(e, signer(), 4);
  REQUIRE(f.has_value());
  frame_error why{};
  CHECK_FALSE(decode(f->data(), f->size(), {}, &why).has_value());
}
