// Payment vouchers: EIP-712 typed data signed by a channel's client, as the payment-channel
// contract (contracts/payment_channel.vy) checks them.
//
//   domain  EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
//           = ("gpugrid", "1", chain id, the contract's address)
//   message Voucher(uint256 channel,uint256 chainId,uint256 amount,uint256 nonce)
//
// `amount` is cumulative (everything the client owes on the channel so far) and `nonce` grows
// with every voucher; the contract pays amount - redeemed and refuses a voucher whose nonce or
// amount does not grow, one for another channel, chain or contract, and one above the deposit.
// Values and pure functions; any thread.
#pragma once

#include <string>

#include "chain/address.h"
#include "chain/secp256k1_key.h"

namespace gpugrid::chain {

struct voucher {
  u256 channel;
  u256 chain_id;
  u256 amount;
  u256 nonce;
};

struct signed_voucher {
  voucher v;
  address contract;   // the EIP-712 verifyingContract
  signature sig;
};

hash32 eip712_domain_separator(const u256& chain_id, const address& contract);
hash32 voucher_struct_hash(const voucher& v);
// keccak256(0x19 0x01 || domain separator || struct hash).
hash32 voucher_digest(const voucher& v, const address& contract);

signed_voucher sign_voucher(const secret_key& client, const voucher& v, const address& contract);
// The signer of a voucher (compare with the channel's client).
expected<address> voucher_signer(const signed_voucher& sv);

// One-line JSON: {"channel":"7","chain_id":"1","amount":"100","nonce":"3","contract":"0x..",
// "v":27,"r":"0x..","s":"0x.."}; numbers as decimal strings. parse_voucher_json checks every
// field and fails with invalid_input naming the one at fault.
std::string voucher_to_json(const signed_voucher& sv);
expected<signed_voucher> parse_voucher_json(const std::string& text, const std::string& what);

}  // namespace gpugrid::chain
