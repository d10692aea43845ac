#include "chain/voucher_check.h"

#include <catch2/catch.hpp>

using namespace gpugrid::chain;

namespace {

struct fixture {
  secret_key client = secret_key::generate();
  secret_key provider = secret_key::generate();
  address contract;
  voucher_check_input in;

  fixture() {
    contract.b[19] = 0x42;
    in.chain_id = 31337;
    in.contract = contract;
    in.self = provider.addr();
    in.channel.id = 7;
    in.channel.client = client.addr();
    in.channel.provider = provider.addr();
    in.channel.deposit = 1000;
    in.channel.expiry = 2000000;
    in.now_s = 1000000;
    in.price = 10;
    in.last = {100, 5};
    in.voucher = sign_voucher(client, {7, 31337, 110, 6}, contract);
  }
  voucher_verdict check() const { return check_voucher(in); }
};

}  // namespace

TEST_CASE("voucher check: a voucher that pays the job on the right channel is accepted", "[voucher_check]") {
  fixture f;
  auto v = f.check();
  CHECK(v.ok);
  CHECK(v.reason.empty());
  // More than the price is fine too (a client may prepay).
  f.in.voucher = sign_voucher(f.client, {7, 31337, 500, 9}, f.contract);
  CHECK(f.check().ok);
}

TEST_CASE("voucher check: replayed and stale vouchers are refused", "[voucher_check]") {
  fixture f;
  f.in.voucher = sign_voucher(f.client, {7, 31337, 100, 5}, f.contract);  // the last accepted, again
  auto v = f.check();
  CHECK_FALSE(v.ok);
  CHECK(v.reason.find("replayed") != std::string::npos);
  f.in.voucher = sign_voucher(f.client, {7, 31337, 120, 5}, f.contract);  // amount up, nonce not
  CHECK_FALSE(f.check().ok);
  f.in.voucher = sign_voucher(f.client, {7, 31337, 100, 9}, f.contract);  // nonce up, amount not
  CHECK_FALSE(f.check().ok);
  // Already redeemed on chain (a provider that lost its own record still refuses it).
  f.in.last = {0, 0};
  f.in.channel.redeemed = 110;
  f.in.channel.nonce = 6;
  f.in.voucher = sign_voucher(f.client, {7, 31337, 110, 6}, f.contract);
  CHECK_FALSE(f.check().ok);
}

TEST_CASE("voucher check: forged and cross-channel vouchers are refused", "[voucher_check]") {
  fixture f;
  secret_key mallory = secret_key::generate();
  f.in.voucher = sign_voucher(mallory, {7, 31337, 110, 6}, f.contract);
  auto v = f.check();
  CHECK_FALSE(v.ok);
  CHECK(v.reason.find("signed by") != std::string::npos);
  // An altered amount no longer recovers the client.
  f.in.voucher = sign_voucher(f.client, {7, 31337, 110, 6}, f.contract);
  f.in.voucher.v.amount = 900;
  CHECK(f.check().reason.find("signed by") != std::string::npos);
  // Signed for channel 8 of the same client, presented for channel 7.
  f.in.voucher = sign_voucher(f.client, {8, 31337, 110, 6}, f.contract);
  f.in.voucher.v.channel = 7;
  CHECK(f.check().reason.find("signed by") != std::string::npos);
  // A channel whose provider is someone else.
  f.in.voucher = sign_voucher(f.client, {7, 31337, 110, 6}, f.contract);
  f.in.channel.provider = mallory.addr();
  CHECK(f.check().reason.find("not this provider's wallet") != std::string::npos);
}

TEST_CASE("voucher check: cross-chain and cross-contract vouchers are refused", "[voucher_check]") {
  fixture f;
  f.in.voucher = sign_voucher(f.client, {7, 1, 110, 6}, f.contract);
  CHECK(f.check().reason.find("is for chain 1") != std::string::npos);
  address other;
  other.b[19] = 0x43;
  f.in.voucher = sign_voucher(f.client, {7, 31337, 110, 6}, other);
  CHECK(f.check().reason.find("is for contract") != std::string::npos);
  // The right chain id in the voucher but the domain of another chain: another signer.
  f.in.voucher = sign_voucher(f.client, {7, 1, 110, 6}, f.contract);
  f.in.voucher.v.chain_id = 31337;
  CHECK(f.check().reason.find("signed by") != std::string::npos);
}

TEST_CASE("voucher check: underpaying, short, small, closed and expiring channels are refused", "[voucher_check]") {
  fixture f;
  f.in.voucher = sign_voucher(f.client, {7, 31337, 105, 6}, f.contract);
  CHECK(f.check().reason.find("the job costs") != std::string::npos);

  fixture s;
  s.in.channel.deposit = 105;
  auto v = s.check();
  CHECK_FALSE(v.ok);
  CHECK(v.short_deposit);
  CHECK(v.reason.find("does not cover") != std::string::npos);

  fixture m;
  m.in.min_deposit = 5000;
  v = m.check();
  CHECK_FALSE(v.ok);
  CHECK_FALSE(v.short_deposit);
  CHECK(v.reason.find("below this provider's minimum") != std::string::npos);

  fixture c;
  c.in.channel.closed = true;
  CHECK(c.check().reason.find("closed") != std::string::npos);

  fixture e;
  e.in.channel.expiry = e.in.now_s + 60;
  CHECK(e.check().reason.find("safety margin") != std::string::npos);
  e.in.safety_margin_s = 30;
  CHECK(e.check().ok);
}

TEST_CASE("voucher check: claims round-trip between the chain and the grid's packed form", "[voucher_check]") {
  secret_key k = secret_key::generate();
  address contract;
  contract.b[0] = 0x99;
  signed_voucher sv = sign_voucher(k, {u256(1) << 200, 137, u256("123456789012345678901234567890"), 77}, contract);
  auto claim = claim_of(sv, 42);
  auto back = gpugrid::ledger::voucher_claim::unpack(claim.pack(), "claim").value();
  signed_voucher again = voucher_of(back);
  CHECK(again.v.channel == sv.v.channel);
  CHECK(again.v.amount == sv.v.amount);
  CHECK(again.contract == contract);
  CHECK(voucher_signer(again).value() == k.addr());
  CHECK(u256_of(back.price) == 42);
  CHECK(price_wei(0.001) == u256(1000000000000000ull));
  CHECK(price_wei(0) == 0);
  CHECK(price_wei(-1) == 0);
  std::string bad = claim.pack();
  bad[32 + 20 + 32 * 5] = 2;  // recovery id
  CHECK_FALSE(gpugrid::ledger::voucher_claim::unpack(bad, "claim"));
  CHECK_FALSE(gpugrid::ledger::voucher_claim::unpack(bad.substr(1), "claim"));
}

TEST_CASE("redeem decision: threshold, expiry, nothing unredeemed", "[voucher_check]") {
  payment_channel::channel_state ch;
  ch.deposit = 1000;
  ch.redeemed = 100;
  ch.expiry = 1000000;
  const int64_t now = 500000, margin = 3600;
  CHECK_FALSE(redeem_due(ch, 100, 0, now, margin));     // nothing new
  CHECK_FALSE(redeem_due(ch, 150, 60, now, margin));    // 50 unredeemed, below 60
  CHECK(redeem_due(ch, 160, 60, now, margin));          // reaches it
  CHECK(redeem_due(ch, 101, 0, now, margin));           // threshold 0: after every job
  ch.expiry = now + 2 * margin;                         // close to expiry: whatever the amount
  CHECK(redeem_due(ch, 101, 1000, now, margin));
  ch.expiry = now + 2 * margin + 1;
  CHECK_FALSE(redeem_due(ch, 101, 1000, now, margin));
}
