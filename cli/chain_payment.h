// Jobs paid on an EVM chain: the command line's implementations of actors/payment.h.
//
// chain_link: one connection to the chain's JSON-RPC endpoint with the payment-channel contract,
// resolved from flags, the environment (GPUGRID_CHAIN_*) and DATA_DIR/chain.toml (chain/wallet.h).
//
// chain_payer (client, `run`): pays a provider's bid with a voucher on this wallet's open
// channel with that provider (found in the contract's Opened logs and remembered in
// DATA_DIR/payments/), raising the cumulative amount by the bid's price. The new amount and
// nonce are written to DATA_DIR/payments/ (atomically, synced) BEFORE the voucher is signed, so
// a crash never reuses a nonce with another amount.
//
// chain_gate (provider, `offer`): announces the chain terms in bids and checks each job's
// voucher (chain/voucher_check.h) against the channel as read with eth_call (cached for
// `refresh_s`, read again when the deposit looks short) before the job starts. The latest
// accepted voucher per channel is written to DATA_DIR/claims/ before the job runs, and the
// ledger entry of the job carries it. A redeemer thread cashes the latest voucher of a channel
// when its unredeemed amount reaches `redeem_threshold`, when the channel nears its expiry,
// at start (claims left by a crash or kill, from DATA_DIR/claims/ and the ledger) and on drain.
// A failed redeem is kept and retried every `retry_s`.
//
// Both are thread-safe. Calls block on the endpoint (one request at a time per link).
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "actors/payment.h"
#include "chain/payment_channel.h"
#include "chain/tx_sender.h"
#include "chain/wallet.h"

namespace gpugrid::cli {

struct chain_flags {
  std::string rpc;          // --chain-rpc
  std::string contract;     // --contract
  std::string chain_id;     // --chain-id
  std::string max_fee_gwei; // --max-fee
};

struct chain_link {
  std::unique_ptr<chain::rpc_client> rpc;
  std::mutex rpc_mu;        // one request at a time
  std::string url;
  chain::u256 chain_id;
  chain::address contract;
  chain::gas_policy gas;
  chain::confirm_policy confirm;
  chain::u256 from_block;
};

// Null (no error) when no endpoint is configured anywhere: the grid's unsettled credits.
// Fails when one is configured but cannot be used (no contract, wrong chain id, unreachable).
expected<std::shared_ptr<chain_link>> open_chain_link(const std::string& data_dir, const chain_flags& flags);

class chain_payer : public grid::job_payer {
 public:
  chain_payer(std::shared_ptr<chain_link> link, chain::secret_key key, std::string data_dir);
  expected<ledger::voucher_claim> pay(const grid::key32& provider, const ledger::chain_terms& terms) override;

 private:
  struct channel_entry {
    chain::payment_channel::channel_state state;
    chain::u256 amount, nonce;  // of the last voucher signed here
  };
  expected<channel_entry*> channel_for(const chain::address& payee);
  std::string state_path(const chain::u256& channel) const;
  std::string remembered_path(const chain::address& payee) const;

  std::shared_ptr<chain_link> link_;
  chain::secret_key key_;
  std::string dir_;
  std::mutex mu_;
  std::map<chain::address, channel_entry> channels_;
};

struct gate_options {
  chain::u256 min_deposit;
  chain::u256 redeem_threshold;        // 0: redeem after every job
  int64_t safety_margin_s = 3600;      // refuse (and redeem) this close to a channel's expiry
  int64_t refresh_s = 30;              // re-read a cached channel after this long
  int64_t retry_s = 10;                // retry a failed redeem after this long
  std::function<void(const std::string&)> log;
};

class chain_gate : public grid::payment_gate {
 public:
  // `node_key`: this provider's Ed25519 key, to find its claims in `ledger_path`.
  chain_gate(std::shared_ptr<chain_link> link, chain::secret_key key, std::string data_dir, gate_options options);
  ~chain_gate() override;

  // Reads the claims left from earlier runs (DATA_DIR/claims/ and the ledger's entries) and
  // starts the redeemer, which first redeems what they leave unredeemed.
  status start(const std::string& ledger_path, const grid::key32& node_key);
  // Redeems every channel's latest voucher that is not redeemed yet, waiting at most `limit`;
  // returns how many channels are left unredeemed (kept in DATA_DIR/claims/ for the next start).
  int redeem_all(std::chrono::seconds limit);
  void stop();

  ledger::chain_terms terms(double price) override;
  status admit(const grid::execute_request& req) override;
  std::optional<ledger::voucher_claim> claim_for(const grid::job_id& job) override;
  expected<ledger::word32> admit_session_voucher(const grid::job_id& session, const ledger::voucher_claim& v,
                                                 const ledger::word32& min_add) override;

  const chain::address& wallet() const { return key_.addr(); }

 private:
  struct channel_entry {
    chain::payment_channel::channel_state state;
    int64_t fetched_ms = 0;
    std::optional<ledger::voucher_claim> latest;   // the last voucher accepted
    int64_t failed_ms = 0;                         // last failed redeem
  };
  expected<chain::payment_channel::channel_state> read_channel(const chain::u256& id);
  // Checks `sv` (adding at least `price` wei), persists it as its channel's latest claim and
  // files it under `job`: as the job's claim, or (`session`) added to the session's total.
  // Returns the wei it added.
  expected<chain::u256> accept(const chain::signed_voucher& sv, const chain::u256& price, const grid::job_id& job,
                               bool session);
  status persist_claim(const ledger::voucher_claim& c);
  // Redeems the channel's latest voucher when it is due (or `force`). Call without mu_.
  status redeem_channel(const chain::u256& id, bool force);
  void redeemer_loop();
  bool due_locked(const channel_entry& e, int64_t now_ms, bool force) const;

  std::shared_ptr<chain_link> link_;
  chain::secret_key key_;
  std::string dir_;
  gate_options options_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool started_ = false;
  std::map<chain::u256, channel_entry> channels_;
  std::map<grid::job_id, ledger::voucher_claim> by_job_;
  std::thread redeemer_;
};

}  // namespace gpugrid::cli
