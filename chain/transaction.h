// EIP-1559 (type 2) transactions: the signing hash, the signature and the raw bytes that
// eth_sendRawTransaction takes.
//
//   raw = 0x02 || rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gasLimit, to,
//                      value, data, accessList, yParity, r, s])
//
// The access list is always empty. `to` empty means contract creation. Values and pure
// functions; any thread.
#pragma once

#include <optional>

#include "chain/address.h"
#include "chain/secp256k1_key.h"

namespace gpugrid::chain {

struct eip1559_transaction {
  u256 chain_id;
  u256 nonce;
  u256 max_priority_fee_per_gas;
  u256 max_fee_per_gas;
  u256 gas_limit;
  std::optional<address> to;
  u256 value;
  bytes data;
};

struct signed_transaction {
  bytes raw;      // what eth_sendRawTransaction takes
  hash32 hash;    // keccak256(raw): the transaction hash
};

// keccak256(0x02 || rlp(the first nine fields)).
hash32 signing_hash(const eip1559_transaction& tx);
signed_transaction sign_transaction(const eip1559_transaction& tx, const secret_key& key);

}  // namespace gpugrid::chain
