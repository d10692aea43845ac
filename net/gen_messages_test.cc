// The generation-session messages on the wire: fields survive, bad ones are refused, bid
// signatures and stream digests bind what they claim.
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

expected<message> round(const message& m) {
  auto f = encode(m, signer(), 3);
  if (!f) return f.error();
  auto d = decode(f->data(), f->size());
  if (!d) return d.error();
  return d->msg;
}

template <typename T>
T sample() {
  for (auto& m : testing::sample_messages())
    if (auto* x = std::get_if<T>(&m)) return *x;
  FAIL("no sample");
  return T{};
}

}  // namespace

TEST_CASE("generation messages keep their fields", "[net][codec][gen]") {
  auto open = std::get<gen_open>(*round(sample<gen_open>()));
  REQUIRE(open.files.size() == 2);
  CHECK(open.files[1].name == "tokenizer.json");
  CHECK(open.files[0].size == 123456);
  CHECK(open.max_price_generated == -1);
  CHECK(open.prompt_tokens == 37);

  auto p = std::get<gen_prompt>(*round(sample<gen_prompt>()));
  CHECK(p.prompt_ids == std::vector<int32_t>{1, 15043, 3186, 29991});
  CHECK(p.generated_ids == std::vector<int32_t>{450, 1234});
  CHECK(p.sampling.top_k == 40);
  CHECK(p.sampling.seed == 42);
  CHECK(p.stop_strings == std::vector<std::string>{"\n\nUser:"});
  CHECK(p.ignore_eos);
  CHECK_FALSE(p.score_only);

  auto t = std::get<gen_tokens>(*round(sample<gen_tokens>()));
  REQUIRE(t.tokens.size() == 2);
  CHECK(t.tokens[1].id == 29889);
  CHECK(t.tokens[1].logprob == -1.5f);
  CHECK(t.tokens[1].index == 3);
  CHECK(t.done);
  REQUIRE(t.receipt.has_value());
  CHECK(t.receipt->canonical_bytes() == testing::sample_receipt().canonical_bytes());

  gen_tokens mid;
  mid.tokens = {gen_token{5, -0.5f, 0}};
  auto m = std::get<gen_tokens>(*round(mid));
  CHECK_FALSE(m.done);
  CHECK_FALSE(m.receipt.has_value());
}

TEST_CASE("generation messages with bad fields are refused", "[net][codec][gen]") {
  for (std::string name : {"../etc/passwd", "a/b", ".hidden", "", "sp ace"}) {
    auto open = sample<gen_open>();
    open.files[0].name = name;
    auto r = round(open);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message().find("plain file name") != std::string::npos);
  }
  auto open = sample<gen_open>();
  open.files.clear();
  CHECK_FALSE(round(open).has_value());

  auto p = sample<gen_prompt>();
  p.prompt_ids.clear();
  CHECK_FALSE(round(p).has_value());
  p = sample<gen_prompt>();
  p.max_new_tokens = -1;
  CHECK_FALSE(round(p).has_value());

  auto b = sample<gen_bid>();
  b.price_generated = -0.5;
  CHECK_FALSE(round(b).has_value());
}

TEST_CASE("generation bid signatures bind the prices", "[net][codec][gen]") {
  gen_bid b = sample<gen_bid>();
  sign_gen_bid(b, signer());
  CHECK(verify_gen_bid(b, signer().public_key()));
  gen_bid cheaper = b;
  cheaper.price_generated /= 2;
  CHECK_FALSE(verify_gen_bid(cheaper, signer().public_key()));
  CHECK_FALSE(verify_gen_bid(b, testing::pattern<32>(1)));
  b.signature.reset();
  CHECK_FALSE(verify_gen_bid(b, signer().public_key()));
}

TEST_CASE("stream digests depend on every token and the session", "[net][codec][gen]") {
  auto digest = [](std::vector<gen_token> ts, uint8_t session_seed) {
    gen_stream_digest d;
    for (const auto& t : ts) d.add(t);
    return d.finish(testing::pattern<16>(session_seed));
  };
  std::vector<gen_token> ts = {{1, -0.5f, 0}, {2, -0.25f, 1}};
  auto base = digest(ts, 1);
  CHECK(base == digest(ts, 1));
  CHECK(base != digest(ts, 2));
  auto other = ts;
  other[1].logprob = -0.2f;
  CHECK(base != digest(other, 1));
  other = ts;
  other[1].index = 2;
  CHECK(base != digest(other, 1));
  other = ts;
  std::swap(other[0].id, other[1].id);
  CHECK(base != digest(other, 1));
}

TEST_CASE("chain payment for generation survives the wire and binds the bid", "[net][codec][gen]") {
  gen_bid b = sample<gen_bid>();
  gen_chain_terms t;
  t.terms.chain_id = testing::pattern<32>(40);
  t.terms.contract = testing::pattern<20>(41);
  t.terms.payee = testing::pattern<20>(42);
  t.terms.price = testing::pattern<32>(43);
  t.price_prompt = testing::pattern<32>(44);
  b.terms = t;
  sign_gen_bid(b, signer());
  CHECK(verify_gen_bid(b, signer().public_key()));
  auto back = std::get<gen_bid>(*round(b));
  REQUIRE(back.terms.has_value());
  CHECK(*back.terms == t);
  CHECK(verify_gen_bid(back, signer().public_key()));
  // The signature covers the chain terms: another payee or a higher prompt price breaks it.
  gen_bid other = b;
  other.terms->terms.payee = testing::pattern<20>(45);
  CHECK_FALSE(verify_gen_bid(other, signer().public_key()));
  other = b;
  other.terms->price_prompt[31] ^= 1;
  CHECK_FALSE(verify_gen_bid(other, signer().public_key()));
  other = b;
  other.terms.reset();
  CHECK_FALSE(verify_gen_bid(other, signer().public_key()));

  gen_prompt p = sample<gen_prompt>();
  CHECK_FALSE(std::get<gen_prompt>(*round(p)).voucher.has_value());
  p.voucher = testing::sample_voucher();
  auto pb = std::get<gen_prompt>(*round(p));
  REQUIRE(pb.voucher.has_value());
  CHECK(*pb.voucher == testing::sample_voucher());

  auto pay = std::get<gen_pay>(*round(sample<gen_pay>()));
  CHECK(pay.session == testing::pattern<16>(23));
  CHECK(pay.voucher == testing::sample_voucher());
}

TEST_CASE("generation payment fields of a wrong size are refused", "[net][codec][gen]") {
  // A voucher with a recovery id other than 0 or 1 does not unpack.
  gen_pay pay = sample<gen_pay>();
  pay.voucher.v = 7;
  auto r = round(pay);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message().find("GenPay.voucher") != std::string::npos);
  gen_prompt p = sample<gen_prompt>();
  p.voucher = testing::sample_voucher();
  p.voucher->v = 2;
  auto rp = round(p);
  REQUIRE_FALSE(rp.has_value());
  CHECK(rp.error().message().find("GenPrompt.voucher") != std::string::npos);
}
