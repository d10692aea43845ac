#include "chain/tx_sender.h"

#include <thread>

#include "chain/transaction.h"

namespace gpugrid::chain {

namespace {

bool nonce_conflict(const std::string& m) {
  return m.find("nonce too low") != std::string::npos || m.find("already known") != std::string::npos ||
         m.find("underpriced") != std::string::npos || m.find("nonce is too low") != std::string::npos;
}

std::string gwei(const u256& wei) { return format_amount(wei, 9) + " gwei"; }

}  // namespace

status check_chain_id(rpc_client& rpc, const u256& want) {
  GG_ASSIGN_OR_RETURN(u256 got, rpc.chain_id());
  if (got != want)
    return invalid_input("chain RPC {} serves chain id {}, not the configured {} (wrong endpoint?)", rpc.url(),
                         to_decimal(got), to_decimal(want));
  return status::ok();
}

tx_sender::tx_sender(rpc_client& rpc, const secret_key& key, u256 chain_id, gas_policy gas, confirm_policy confirm)
    : rpc_(rpc), key_(key), chain_id_(chain_id), gas_(gas), confirm_(confirm) {}

expected<receipt> tx_sender::send(const address& to, const u256& value, const bytes& data, std::FILE* log) {
  if (!chain_checked_) {
    GG_RETURN_IF_ERROR(check_chain_id(rpc_, chain_id_));
    chain_checked_ = true;
  }
  call_request c{key_.addr(), to, value, data};
  GG_ASSIGN_OR_RETURN(u256 estimate, rpc_.estimate_gas(c));
  eip1559_transaction tx;
  tx.chain_id = chain_id_;
  tx.to = to;
  tx.value = value;
  tx.data = data;
  tx.gas_limit = estimate + estimate * gas_.gas_margin_percent / 100;
  GG_ASSIGN_OR_RETURN(u256 base, rpc_.base_fee());
  if (gas_.priority_fee) {
    tx.max_priority_fee_per_gas = *gas_.priority_fee;
  } else {
    GG_ASSIGN_OR_RETURN(tx.max_priority_fee_per_gas, rpc_.max_priority_fee());
  }
  if (tx.max_priority_fee_per_gas > gas_.max_fee_per_gas) tx.max_priority_fee_per_gas = gas_.max_fee_per_gas;
  u256 wanted = 2 * base + tx.max_priority_fee_per_gas;
  if (base + tx.max_priority_fee_per_gas > gas_.max_fee_per_gas)
    return invalid_input("gas price {} (base fee {} + tip) is above the limit {}; nothing was sent (raise --max-fee)",
                         gwei(base + tx.max_priority_fee_per_gas), gwei(base), gwei(gas_.max_fee_per_gas));
  tx.max_fee_per_gas = wanted < gas_.max_fee_per_gas ? wanted : gas_.max_fee_per_gas;

  for (int attempt = 0;; ++attempt) {
    GG_ASSIGN_OR_RETURN(tx.nonce, rpc_.transaction_count(key_.addr()));
    signed_transaction s = sign_transaction(tx, key_);
    auto sent = rpc_.send_raw_transaction(s.raw);
    if (!sent) {
      const std::string& m = sent.error().message();
      if (m.find("already known") != std::string::npos) {
        // This very transaction is already in the pool (a retried send): wait for it.
      } else if (nonce_conflict(m) && attempt < 3) {
        continue;  // another process used this nonce: take the next one
      } else {
        return sent.error();
      }
    } else if (*sent != s.hash) {
      return invalid_input("chain RPC {} reports transaction hash {} for a transaction whose hash is {}", rpc_.url(),
                           to_hex(*sent), to_hex(s.hash));
    }
    if (log) fmt::print(log, "gpugrid: sent transaction {} (nonce {})\n", to_hex(s.hash), to_decimal(tx.nonce));
    if (on_sent) on_sent(s.hash);
    return wait(s.hash);
  }
}

expected<receipt> tx_sender::wait(const hash32& hash) {
  auto deadline = std::chrono::steady_clock::now() + confirm_.timeout;
  status last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = rpc_.transaction_receipt(hash);
    if (!r) {
      last = r.error();
    } else if (r->has_value()) {
      const receipt& rc = **r;
      if (!rc.success)
        return invalid_input("transaction {} reverted in block {} (gas used {})", to_hex(hash),
                             to_decimal(rc.block_number), to_decimal(rc.gas_used));
      if (confirm_.confirmations <= 1) return rc;
      auto head = rpc_.block_number();
      if (head && *head + 1 >= rc.block_number + confirm_.confirmations) return rc;
    }
    std::this_thread::sleep_for(confirm_.poll);
  }
  return io_error("transaction {} was sent but has no receipt with {} confirmation(s) after {} s{}; it may still be "
                  "mined: check it later",
                  to_hex(hash), confirm_.confirmations, confirm_.timeout.count() / 1000,
                  last.is_ok() ? "" : " (last error: " + last.message() + ")");
}

}  // namespace gpugrid::chain
