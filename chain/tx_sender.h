// Sends contract calls as EIP-1559 transactions from one wallet and waits for them.
//
// send(): checks the endpoint's chain id against the configured one (a node that lies about
// it is refused before anything is signed), estimates gas (a call that would revert fails here,
// with the contract's reason, and costs nothing), adds a margin, prices it from the latest base
// fee (2 x base fee + priority fee, capped: when that exceeds the max-fee limit nothing is sent),
// signs, sends, then polls the receipt until the transaction is `confirmations` blocks deep.
// A nonce taken by another process using the same wallet ("nonce too low", "already known",
// "replacement ... underpriced") is retried with a fresh nonce, at most 3 times.
//
// Failures are one line. A transaction that was sent but whose receipt does not arrive in
// time fails with kind io and names its hash (it may still be mined: nothing is lost; look it
// up later). A transaction mined with status 0 fails with invalid_input.
//
// Not thread-safe; borrows the rpc_client and the key, which must outlive it.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>

#include "chain/rpc_client.h"
#include "chain/secp256k1_key.h"

namespace gpugrid::chain {

struct gas_policy {
  u256 max_fee_per_gas = u256(500) * 1000000000;   // the limit: 500 gwei
  std::optional<u256> priority_fee;                 // none: eth_maxPriorityFeePerGas
  unsigned gas_margin_percent = 25;                 // added to the estimate
};

struct confirm_policy {
  unsigned confirmations = 1;                       // 1: mined
  std::chrono::milliseconds poll{250};
  std::chrono::milliseconds timeout{120000};
};

class tx_sender {
 public:
  tx_sender(rpc_client& rpc, const secret_key& key, u256 chain_id, gas_policy gas = {}, confirm_policy confirm = {});

  // `log` (may be null) gets one line per sent transaction with its hash.
  expected<receipt> send(const address& to, const u256& value, const bytes& data, std::FILE* log = nullptr);

  // When set, called with each transaction's hash as soon as the endpoint has taken it, before
  // its receipt is awaited (a caller records it there, so a late receipt loses nothing).
  std::function<void(const hash32& hash)> on_sent;

 private:
  expected<receipt> wait(const hash32& hash);

  rpc_client& rpc_;
  const secret_key& key_;
  u256 chain_id_;
  gas_policy gas_;
  confirm_policy confirm_;
  bool chain_checked_ = false;
};

// Fails (invalid_input) when the endpoint's eth_chainId is not `want`.
status check_chain_id(rpc_client& rpc, const u256& want);

}  // namespace gpugrid::chain
