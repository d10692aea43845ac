#include "chain/payment_channel.h"

#include <set>

#include "chain/abi.h"
#include "chain/keccak.h"

namespace gpugrid::chain::payment_channel {

bytes open_call(const address& provider, const u256& timeout_s) {
  return abi::call_encoder("open(address,uint256)").add_address(provider).add_uint(timeout_s).finish();
}

bytes deposit_call(const u256& channel, const u256& expiry) {
  return abi::call_encoder("deposit(uint256,uint256)").add_uint(channel).add_uint(expiry).finish();
}

bytes redeem_call(const signed_voucher& sv) {
  return abi::call_encoder("redeem(uint256,uint256,uint256,uint8,bytes32,bytes32)")
      .add_uint(sv.v.channel)
      .add_uint(sv.v.amount)
      .add_uint(sv.v.nonce)
      .add_uint(27 + sv.sig.v)
      .add_bytes32(sv.sig.r)
      .add_bytes32(sv.sig.s)
      .finish();
}

bytes withdraw_call(const u256& channel) { return abi::call_encoder("withdraw(uint256)").add_uint(channel).finish(); }

bytes anchor_call(const hash32& head, const u256& sequence) {
  return abi::call_encoder("anchor(bytes32,uint256)").add_bytes32(head).add_uint(sequence).finish();
}

bytes channels_call(const u256& channel) { return abi::call_encoder("channels(uint256)").add_uint(channel).finish(); }

bytes channel_count_call() { return abi::call_encoder("channel_count()").finish(); }

expected<channel_state> decode_channel(const u256& id, const bytes& r) {
  const std::string what = "channels(" + to_decimal(id) + ")";
  channel_state c;
  c.id = id;
  GG_ASSIGN_OR_RETURN(c.client, abi::decode_address(r, 0, what));
  GG_ASSIGN_OR_RETURN(c.provider, abi::decode_address(r, 1, what));
  GG_ASSIGN_OR_RETURN(c.deposit, abi::decode_uint(r, 2, what));
  GG_ASSIGN_OR_RETURN(c.redeemed, abi::decode_uint(r, 3, what));
  GG_ASSIGN_OR_RETURN(c.nonce, abi::decode_uint(r, 4, what));
  GG_ASSIGN_OR_RETURN(c.expiry, abi::decode_uint(r, 5, what));
  GG_ASSIGN_OR_RETURN(c.closed, abi::decode_bool(r, 6, what));
  if (c.redeemed > c.deposit) return invalid_input("{}: redeemed is above the deposit", what);
  return c;
}

hash32 opened_topic() { return keccak256("Opened(uint256,address,address,uint256,uint256)"); }
hash32 redeemed_topic() { return keccak256("Redeemed(uint256,uint256,uint256,uint256)"); }
hash32 anchored_topic() { return keccak256("Anchored(address,bytes32,uint256)"); }

expected<u256> opened_channel(const receipt& r, const address& contract) {
  for (const auto& l : r.logs)
    if (l.emitter == contract && l.topics.size() == 4 && l.topics[0] == opened_topic())
      return from_be(l.topics[1].data(), 32);
  return invalid_input("transaction {} logged no Opened event of contract {}", to_hex(r.transaction_hash),
                       contract.checksummed());
}

expected<channel_state> read_channel(rpc_client& rpc, const address& contract, const u256& id) {
  GG_ASSIGN_OR_RETURN(bytes r, rpc.eth_call({std::nullopt, contract, 0, channels_call(id)}));
  if (r.empty())
    return invalid_input("contract {} answered nothing: is it the payment-channel contract on this chain?",
                         contract.checksummed());
  GG_ASSIGN_OR_RETURN(channel_state c, decode_channel(id, r));
  if (c.client.is_zero()) return invalid_input("channel {} does not exist in contract {}", to_decimal(id), contract.checksummed());
  return c;
}

expected<std::vector<channel_state>> channels_of(rpc_client& rpc, const address& contract, const address& who,
                                                 const u256& from_block, const u256& window) {
  hash32 who_topic{};
  std::copy(who.b.begin(), who.b.end(), who_topic.begin() + 12);
  GG_ASSIGN_OR_RETURN(u256 head, rpc.block_number());
  std::set<u256> ids;
  const u256 step = window == 0 ? u256(1) : window;
  for (u256 start = from_block; start <= head; start += step) {
    u256 end = start + step - 1 < head ? start + step - 1 : head;
    for (int position : {2, 3}) {  // client, then provider
      log_filter f;
      f.from_block = start;
      f.to_block = end;
      f.emitter = contract;
      f.topics.resize(position + 1);
      f.topics[0] = {opened_topic()};
      f.topics[position] = {who_topic};
      GG_ASSIGN_OR_RETURN(std::vector<log_entry> logs, rpc.get_logs(f));
      for (const auto& l : logs)
        if (l.topics.size() == 4) ids.insert(from_be(l.topics[1].data(), 32));
    }
  }
  std::vector<channel_state> out;
  for (const auto& id : ids) {
    GG_ASSIGN_OR_RETURN(channel_state c, read_channel(rpc, contract, id));
    out.push_back(c);
  }
  return out;
}

}  // namespace gpugrid::chain::payment_channel
