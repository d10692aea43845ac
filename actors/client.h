// The client side of one job: bidding, award, execution with failover, verification,
// reputation and receipts. It talks to provider actors — in this process (the embedded grid)
// or proxies for remote providers — through the same messages either way.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/actor.hpp>

#include "actors/atoms.h"
#include "actors/messages.h"
#include "actors/reputation.h"
#include "base/status.h"
#include "ledger/ledger.h"

namespace gpugrid::grid {

struct provider_handle {
  provider_actor actor;   // the in-process provider or a remote provider's proxy
  key32 key{};
  std::string url;     // "" for the embedded provider
};

struct job_spec {
  std::shared_ptr<const std::string> model_bytes;
  digest32 model_hash{};
  double gflops = 0;
  std::vector<tensor> inputs;
};

// Bids a persistent client may reuse: a provider honours its bid price for the same client
// and model for the bid's validity (valid_ms), so repeated jobs of one model can skip the
// bidding round. Entries are used for half their validity; one that fails is dropped.
// Thread-safe.
class quote_book {
 public:
  struct quote {
    bid_reply bid;            // as received (its job id is the job it was made for)
    int64_t expires_ms = 0;   // unix ms
  };
  void put(const bid_reply& b, const digest32& model, int64_t now_ms);
  std::optional<quote> get(const key32& provider, const digest32& model, int64_t now_ms) const;
  // The provider now holds the model, so later jobs need not send it.
  void mark_cached(const key32& provider, const digest32& model);
  void drop(const key32& provider, const digest32& model);
  void drop_model(const digest32& model);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<key32, digest32>, quote> quotes_;
};

class receipt_outbox;
class job_payer;  // actors/payment.h
class pay_recorder;  // actors/pay_recorder.h

struct client_options {
  int redundancy = 1;
  // Fewest results accepted when providers are missing or fail (`--min-redundancy`); 0: all K.
  // Below it the job fails (exit 3) instead of running less cross-checked than asked.
  int min_redundancy = 0;
  double max_price = -1;          // < 0: no limit
  double timeout_s = 60;          // per execution attempt
  int bid_window_ms = 250;
  double spot_check_rate = 0.0;   // floor of the adaptive local re-run rate (K = 1: the result;
                                  // K > 1: an agreeing set, at its members' lowest rate)
  quote_book* quotes = nullptr;   // set: reuse standing bids (persistent clients)
  // Set: receipts are kept there until their providers record them, and pending ones are sent
  // again before each job (see actors/receipt_outbox.h) unless redeliver_before_job is off (a
  // caller with many jobs in flight, whose pending receipts are mostly those of jobs still
  // waiting for their answer, redelivers at its start and end instead).
  receipt_outbox* outbox = nullptr;
  bool redeliver_before_job = true;
  // Set (for the same ledger and outbox as the job's): a paid receipt is recorded by it, with
  // those of other jobs in flight, instead of on the calling thread. Not used by a client that
  // pays on a chain (its jobs run every step in place).
  pay_recorder* recorder = nullptr;
  // Set: bids with chain terms are paid with a voucher sent with the job. Null: such bids are
  // skipped (their providers would refuse the job unpaid).
  job_payer* payer = nullptr;
  // true: the reputation book is saved to its file after every job; false: the caller saves it
  // (a batch of thousands of jobs saves it now and then and at its end).
  bool save_reputation = true;
  // Set: the job is abandoned when it becomes true (checked every 10 ms) before any result has
  // come back: open attempts are cancelled (the provider is told to stop) and nothing is paid;
  // run_job fails with io ("cancelled"). Once a result is in, the job runs to its end (the work
  // was delivered and is paid as usual). Must outlive the call.
  const std::atomic<bool>* cancel = nullptr;
};

struct provider_used {
  std::string node;               // hex of the provider key
  std::string url;
  double price = 0;
  bool paid = false;
  bool agreed = true;
  bool settled = false;           // paid with a voucher on a chain (else unsettled credits)
  std::string paid_wei;           // settled: the voucher's price for this job, in wei (decimal)
};

struct job_outcome {
  std::vector<tensor> outputs;
  std::vector<provider_used> providers;
  int agreeing = 1;
  std::string method;             // "single", "redundant", "spot-check", ...
  double total_ms = 0, queue_ms = 0, transfer_ms = 0, compute_ms = 0;
};

// Runs inputs on the client's own engine (spot checks and tie-breaks); may be empty.
using local_runner = std::function<expected<std::vector<tensor>>(const std::vector<tensor>&)>;

// Fails with no_provider (exit 3) when nobody could run the job, verification (exit 4) when
// results cannot be reconciled, invalid_input (exit 2) when the job itself is bad.
// Blocks its caller until the job ends, and runs the job's blocking steps (the local engine,
// ledger and outbox writes) on that thread meanwhile: call it from a thread of the caller's
// own, never from an actor (the job's actor needs the scheduler's threads).
expected<job_outcome> run_job(caf::actor_system& sys, const std::vector<provider_handle>& providers,
                              const job_spec& job, const client_options& options, const keypair& client,
                              reputation_book* reputation, ledger::ledger_file* ledger, const local_runner& local,
                              const std::function<void(const std::string&)>& note);

// The printable node id of a key (see net/identity.h).
std::string node_hex(const key32& key);

}  // namespace gpugrid::grid
