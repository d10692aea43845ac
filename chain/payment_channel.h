// The payment-channel contract (contracts/payment_channel.vy) seen from C++: the calls it
// takes, the state it returns and the events it logs. Pure encoders and decoders; any thread.
// Decoders fail with invalid_input naming what is malformed.
#pragma once

#include <optional>
#include <vector>

#include "chain/rpc_client.h"
#include "chain/voucher.h"

namespace gpugrid::chain::payment_channel {

struct channel_state {
  u256 id;
  address client;
  address provider;
  u256 deposit;     // everything ever deposited
  u256 redeemed;    // cumulative amount paid to the provider
  u256 nonce;       // nonce of the last redeemed voucher
  u256 expiry;      // unix time after which the client may withdraw
  bool closed = false;

  u256 unredeemed() const { return deposit - redeemed; }
};

bytes open_call(const address& provider, const u256& timeout_s);
bytes deposit_call(const u256& channel, const u256& expiry);
bytes redeem_call(const signed_voucher& sv);
bytes withdraw_call(const u256& channel);
bytes anchor_call(const hash32& head, const u256& sequence);
bytes channels_call(const u256& channel);
bytes channel_count_call();

expected<channel_state> decode_channel(const u256& id, const bytes& result);

// keccak256 of the event signatures.
hash32 opened_topic();     // Opened(uint256,address,address,uint256,uint256)
hash32 redeemed_topic();   // Redeemed(uint256,uint256,uint256,uint256)
hash32 anchored_topic();   // Anchored(address,bytes32,uint256)

// The channel id of the Opened event `contract` logged in a receipt.
expected<u256> opened_channel(const receipt& r, const address& contract);

// Reads one channel with eth_call; a channel that does not exist fails with invalid_input.
expected<channel_state> read_channel(rpc_client& rpc, const address& contract, const u256& id);

// Every channel in which `who` is the client or the provider (from the Opened logs since
// `from_block`, the contract's deployment block; asked for in windows of `window` blocks, since
// public endpoints limit the range of one eth_getLogs), with its current state.
expected<std::vector<channel_state>> channels_of(rpc_client& rpc, const address& contract, const address& who,
                                                 const u256& from_block = 0, const u256& window = 10000);

}  // namespace gpugrid::chain::payment_channel
