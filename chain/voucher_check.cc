#include "chain/voucher_check.h"

#include <cmath>

#include <fmt/format.h>

namespace gpugrid::chain {

namespace {

constexpr int kDecimals = 18;

std::string amount(const u256& wei) { return format_amount(wei, kDecimals); }

voucher_verdict refuse(std::string why, bool short_deposit = false) { return {false, short_deposit, std::move(why)}; }

}  // namespace

u256 u256_of(const ledger::word32& w) { return from_be(w.data(), 32); }
ledger::word32 word_of(const u256& v) { return to_word(v); }

address address_of(const ledger::addr20& a) {
  address out;
  out.b = a;
  return out;
}

ledger::addr20 addr20_of(const address& a) { return a.b; }

signed_voucher voucher_of(const ledger::voucher_claim& c) {
  signed_voucher sv;
  sv.v = {u256_of(c.channel), u256_of(c.chain_id), u256_of(c.amount), u256_of(c.nonce)};
  sv.contract = address_of(c.contract);
  sv.sig.r = c.r;
  sv.sig.s = c.s;
  sv.sig.v = c.v;
  return sv;
}

ledger::voucher_claim claim_of(const signed_voucher& sv, const u256& price) {
  ledger::voucher_claim c;
  c.chain_id = word_of(sv.v.chain_id);
  c.contract = addr20_of(sv.contract);
  c.channel = word_of(sv.v.channel);
  c.amount = word_of(sv.v.amount);
  c.nonce = word_of(sv.v.nonce);
  c.r = sv.sig.r;
  c.s = sv.sig.s;
  c.v = sv.sig.v;
  c.price = word_of(price);
  return c;
}

u256 price_wei(double token_price) {
  if (!(token_price > 0) || !std::isfinite(token_price)) return 0;
  double nano = std::round(token_price * 1e9);
  if (nano > 9e18) nano = 9e18;
  return u256(static_cast<uint64_t>(nano)) * 1000000000u;
}

voucher_verdict check_voucher(const voucher_check_input& in) {
  const voucher& v = in.voucher.v;
  const auto& ch = in.channel;
  if (v.chain_id != in.chain_id)
    return refuse(fmt::format("the voucher is for chain {}; this provider is paid on chain {}", to_decimal(v.chain_id),
                              to_decimal(in.chain_id)));
  if (in.voucher.contract != in.contract)
    return refuse(fmt::format("the voucher is for contract {}; this provider is paid through {}",
                              in.voucher.contract.checksummed(), in.contract.checksummed()));
  if (ch.id != v.channel) return refuse(fmt::format("channel {} was not read for this voucher", to_decimal(v.channel)));
  if (ch.provider != in.self)
    return refuse(fmt::format("channel {} pays {}, not this provider's wallet {}", to_decimal(ch.id),
                              ch.provider.checksummed(), in.self.checksummed()));
  auto signer = voucher_signer(in.voucher);
  if (!signer) return refuse(fmt::format("the voucher's signature is malformed: {}", signer.error().message()));
  if (*signer != ch.client)
    return refuse(fmt::format("the voucher for channel {} is signed by {}, not the channel's client {} (forged, or "
                              "made for another channel)",
                              to_decimal(ch.id), signer->checksummed(), ch.client.checksummed()));
  if (ch.closed) return refuse(fmt::format("channel {} is closed", to_decimal(ch.id)));
  const u256 floor_nonce = in.last.nonce > ch.nonce ? in.last.nonce : ch.nonce;
  const u256 floor_amount = in.last.amount > ch.redeemed ? in.last.amount : ch.redeemed;
  if (v.nonce <= floor_nonce || v.amount <= floor_amount)
    return refuse(fmt::format("the voucher (nonce {}, amount {}) does not raise channel {}'s last accepted one (nonce {}, "
                              "amount {}): replayed or stale",
                              to_decimal(v.nonce), amount(v.amount), to_decimal(ch.id), to_decimal(floor_nonce),
                              amount(floor_amount)));
  if (v.amount - floor_amount < in.price)
    return refuse(fmt::format("the voucher adds {} on channel {}; the job costs {}", amount(v.amount - floor_amount),
                              to_decimal(ch.id), amount(in.price)));
  if (ch.deposit < in.min_deposit)
    return refuse(fmt::format("channel {}'s deposit {} is below this provider's minimum {}", to_decimal(ch.id),
                              amount(ch.deposit), amount(in.min_deposit)));
  if (v.amount > ch.deposit)
    return refuse(fmt::format("channel {}'s deposit {} does not cover the voucher's {} (top it up: gpugrid wallet "
                              "deposit --channel {})",
                              to_decimal(ch.id), amount(ch.deposit), amount(v.amount), to_decimal(ch.id)),
                  true);
  if (ch.expiry < u256(in.now_s) + u256(in.safety_margin_s > 0 ? in.safety_margin_s : 0))
    return refuse(fmt::format("channel {} expires at {}, within this provider's safety margin of {} s", to_decimal(ch.id),
                              to_decimal(ch.expiry), in.safety_margin_s));
  return {true, false, ""};
}

bool redeem_due(const payment_channel::channel_state& channel, const u256& latest, const u256& threshold,
                int64_t now_s, int64_t safety_margin_s) {
  if (latest <= channel.redeemed) return false;
  if (latest - channel.redeemed >= threshold) return true;
  return channel.expiry <= u256(now_s) + u256(2 * (safety_margin_s > 0 ? safety_margin_s : 0));
}

}  // namespace gpugrid::chain
