// The provider's check of a voucher that came with a job, as plain logic (no network): what
// the payment-channel contract would accept, plus the grid's own rules. The caller supplies
// the channel as last read from the chain (payment_channel::read_channel, cached) and the
// last voucher it accepted on that channel.
//
// A voucher is accepted when: its chain id and contract are this provider's; the channel's
// provider is this provider's wallet; its signature recovers the channel's client; the channel
// is open; its nonce and amount are strictly above both the last accepted and the last
// redeemed on chain; it adds at least the job's price; the channel's deposit is at least
// `min_deposit` and covers the amount; and the channel is not within `safety_margin_s` of its
// expiry (after which the client may withdraw). Refusals carry a one-line reason for the
// client. `short_deposit` marks a refusal that a fresher read of the deposit might lift.
// Pure functions; any thread.
#pragma once

#include <string>

#include "chain/payment_channel.h"
#include "chain/voucher.h"
#include "ledger/voucher_claim.h"

namespace gpugrid::chain {

// Between the grid's packed form and the chain's values.
signed_voucher voucher_of(const ledger::voucher_claim& c);
ledger::voucher_claim claim_of(const signed_voucher& sv, const u256& price);
u256 u256_of(const ledger::word32& w);
ledger::word32 word_of(const u256& v);
address address_of(const ledger::addr20& a);
ledger::addr20 addr20_of(const address& a);

// A price in the chain's token (18 decimals) as a whole number of wei, rounded to the nearest
// nano-token, so that both sides get the same figure from the same double.
u256 price_wei(double token_price);

struct last_accepted {
  u256 amount;
  u256 nonce;
};

struct voucher_check_input {
  signed_voucher voucher;
  u256 price;                   // the job's price, wei
  u256 chain_id;                // this provider's chain
  address contract;
  address self;                 // this provider's wallet
  payment_channel::channel_state channel;
  last_accepted last;           // on this channel; zeros when none
  u256 min_deposit;
  int64_t now_s = 0;            // unix time
  int64_t safety_margin_s = 3600;
};

struct voucher_verdict {
  bool ok = false;
  bool short_deposit = false;
  std::string reason;           // empty when ok
};

voucher_verdict check_voucher(const voucher_check_input& in);

// Whether a provider should redeem a channel's latest accepted voucher (cumulative `latest`)
// now: something is unredeemed and it reaches `threshold`, or the channel expires within twice
// the safety margin (after expiry the client may withdraw what is unredeemed).
bool redeem_due(const payment_channel::channel_state& channel, const u256& latest, const u256& threshold,
                int64_t now_s, int64_t safety_margin_s);

}  // namespace gpugrid::chain
