// The provider: answers bid requests and runs jobs on its device.
//
// provider_core is the logic (thread-safe, no actor runtime): pricing, admission, a model
// cache on disk plus loaded sessions in memory, execution, result signing and its side of the
// receipt. spawn_provider() wraps it in a CAF actor with one detached worker per slot, so model
// execution never blocks the actor scheduler.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/admission.h"
#include "actors/atoms.h"
#include "actors/auction.h"
#include "actors/batcher.h"
#include "actors/messages.h"
#include "actors/model_cache.h"
#include "base/status.h"
#include "ledger/ledger.h"

namespace gpugrid {
class session;
}

namespace gpugrid::grid {

class payment_gate;  // actors/payment.h

struct provider_options {
  int slots = 1;
  std::string device = "auto";
  int threads = 0;                   // engine threads per job; 0: all cores / slots
  price_policy price;
  int64_t max_model_bytes = int64_t{1} << 30;
  // Jobs a client may hold done but unpaid (receipt not yet countersigned) before it is refused.
  int unpaid_credit = 8;
  // Where the unpaid-job counts are kept across restarts (actors/admission.h); empty: in memory.
  std::string unpaid_file;
  // Notes for the operator (the ledger cannot be written, ...); called from any thread.
  std::function<void(const std::string&)> log;
  // Loaded models kept in memory, by their size on disk (weights dominate): least recently
  // used ones are unloaded past this (`offer --max-memory`). A model larger than the budget
  // alone is refused. 0: four times max_model_bytes.
  int64_t max_memory_bytes = 0;
  // Every job stops after max_job_ms, and sooner after 10x the time its paid-for work should
  // take at this device's rate (at least min_job_ms).
  int64_t max_job_ms = 600000;
  int64_t min_job_ms = 5000;
  // A model's first run here is metered: it may use twice the GFLOP it paid for plus this.
  double free_gflops = 1.0;
  // Set: jobs are paid on a chain (actors/payment.h): bids carry its terms and a job whose
  // voucher does not pay for it is refused before it starts. Null: unsettled credits.
  std::shared_ptr<payment_gate> payment;
  // Dynamic batching (actors/batcher.h): jobs for one model with a free batch dimension that
  // arrive within max_wait_us of each other are merged into one execution, max_batch at most.
  // Off unless asked for (`offer`, `serve` and `run --batch` turn it on by default).
  batch_options batch{1, 500};
};

struct provider_counters {
  std::atomic<int64_t> jobs{0}, failures{0}, model_bytes_received{0}, input_bytes{0}, output_bytes{0};
  std::atomic<int64_t> bids{0}, declines{0}, busy{0}, queued{0};
  // Dynamic batching: merged executions, the jobs they carried, merged runs that failed and
  // were redone job by job, and every execution's job count (buckets: kBatchSizeBounds, +Inf).
  std::atomic<int64_t> batched_executions{0}, batched_jobs{0}, batch_fallbacks{0};
  std::atomic<int64_t> batch_sizes[kBatchSizeBuckets] = {};
};

class provider_core {
 public:
  provider_core(keypair identity, std::shared_ptr<model_cache> cache, provider_options options,
                std::shared_ptr<ledger::ledger_file> ledger);
  virtual ~provider_core();

  provider_info info() const;
  // The model cache (what it holds is announced in the DHT).
  const std::shared_ptr<model_cache>& cache() const { return cache_; }
  bid_reply bid(const bid_request& req);
  // Runs one job (blocking; call from a worker thread). Never throws.
  execute_result execute(const execute_request& req);
  // Paid on a chain (provider_options::payment): admission and the job's voucher, checked before
  // the job is queued, one job at a time in arrival order (spawn_provider's cashier): vouchers on
  // a channel are cumulative, and one checked after a later one is refused as stale. False, with
  // `res` failed, when the job is refused; execute() does not check a job paid here again.
  bool pays_on_chain() const { return static_cast<bool>(options_.payment); }
  bool pay_before_run(const execute_request& req, execute_result& res);
  // Runs jobs that share a batch_signature (blocking; a worker thread): each is admitted,
  // priced and checked as execute() does, those that may be merged run as one execution whose
  // outputs are split back (a merged run that fails is redone job by job), and each gets its
  // own result, signature and receipt. Results in the order of reqs.
  std::vector<execute_result> execute_group(const std::vector<std::shared_ptr<const execute_request>>& reqs);
  // Jobs this provider accepts running or queued at once (bids beyond it are declined busy).
  int job_capacity() const;
  // Jobs its node admits running or queued at once (executions beyond it are refused busy):
  // job_capacity(), and at least kQueuePerSlot per slot. Sent with every bid.
  int queue_limit() const;
  static constexpr int kQueuePerSlot = 4;
  const batch_options& batching() const { return options_.batch; }
  // Jobs waiting in the actor's batch queue count as queued (bids see them).
  void add_waiting(int64_t jobs) { counters_.queued += jobs; }
  // Records the client's countersigned receipt in this provider's ledger. Any receipt this
  // provider signed is taken, also one issued before a restart (the client redelivers until it
  // gets an answer). OK: recorded now or before. invalid_input: never acceptable (not signed
  // here, not countersigned by its client, not a payment). io: the ledger cannot be written;
  // the provider then takes no more jobs until an append succeeds again.
  status accept_receipt(const ledger::receipt& r);
  // The same for several receipts at once, appended to the ledger together (one write and
  // fsync per group); one result per receipt, in order.
  std::vector<status> accept_receipts(const std::vector<const ledger::receipt*>& rs);
  // Jobs done for this client and not yet paid (at most provider_options::unpaid_credit).
  int unpaid_jobs(const key32& client);
  bool can_record_payments() const { return !ledger_failed_; }
  void drain() { draining_ = true; }
  // Stops every running job at its next node so the workers can exit.
  void stop() { draining_ = true; stopping_ = true; }
  bool stopping() const { return stopping_; }
  bool draining() const { return draining_; }
  int64_t max_model_bytes() const { return options_.max_model_bytes; }
  int slots() const { return options_.slots; }
  // Fixed at construction (no lock, no copy: bids read it on every request).
  const std::vector<device_summary>& devices() const { return devices_; }
  const provider_counters& counters() const { return counters_; }
  const key32& key() const { return id_.public_key; }
  // GFLOP of one run of a model, as measured here (nullopt until it ran here once).
  std::optional<double> known_gflops(const digest32& hash) const;
  int64_t resident_bytes() const;
  size_t resident_models() const;

 protected:
  // Test seams: a test double (actors/testing/faulty_provider.h) overrides these to misbehave;
  // the product's provider does nothing in them. before_run runs on the worker thread after
  // the model is loaded; a failure fails the job. after_run may change the outputs before
  // they are digested and signed.
  virtual status before_run(const execute_request&) { return status::ok(); }
  virtual void after_run(std::vector<tensor>&) {}

 private:
  expected<std::shared_ptr<session>> session_for(const digest32& hash, const std::shared_ptr<const std::string>& bytes);
  double rate_gflops_per_s(const digest32& hash) const;  // under mu_
  int64_t memory_budget() const;
  struct prepared_job;
  // The stages of a job: admission, pricing and limits; one run alone (metered on a model's
  // first run); the signed result and receipt. prepare() returns false with res failed.
  bool prepare(const execute_request& req, execute_result& res, prepared_job& p);
  execute_result run_prepared(const execute_request& req, execute_result& res, const prepared_job& p);
  execute_result finish(const execute_request& req, execute_result& res, std::vector<tensor> outputs);
  execute_result failed(execute_result& res, const status& st);
  // Admission on `facts`, the inputs' digest and the payment: prepare()'s first stage.
  bool admit_and_pay(const execute_request& req, const admission_facts& facts, execute_result& res);
  admission_facts facts_for(const key32& client) const;  // facts_locked under mu_
  bool batchable(const digest32& hash, const session& s);  // model_allows_batching, cached

  keypair id_;
  std::shared_ptr<model_cache> cache_;
  provider_options options_;
  std::shared_ptr<ledger::ledger_file> ledger_;
  std::vector<device_summary> devices_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopping_{false};
  provider_counters counters_;
  mutable std::mutex mu_;
  struct resident {
    std::shared_ptr<session> s;
    int64_t bytes = 0;
    int64_t last_used = 0;
  };
  std::map<digest32, resident> sessions_;        // loaded models, LRU within memory_budget()
  int64_t resident_bytes_ = 0;
  int64_t use_clock_ = 0;
  struct model_cost {
    double gflops = 0;
    bool exact = false;  // a whole run was metered; else a lower bound from a stopped one
  };
  std::map<digest32, model_cost> gflops_;        // per model: GFLOP of one run, measured here
  std::map<digest32, std::string> bad_models_;  // hash -> why it cannot run here
  std::map<digest32, double> measured_ms_;      // per model: last compute time
  // The facts admission decides on (actors/admission.h). Under mu_.
  admission_facts facts_locked(const key32& client, int64_t model_bytes) const;
  std::map<digest32, bool> batchable_;           // per model: model_allows_batching()
  std::set<job_id> paid_ahead_;                  // paid by pay_before_run, not yet prepared
  std::deque<job_id> paid_ahead_order_;          // the same, oldest first (the set's bound)

  // Payment receipts signed in this run, by job: a digest of their body and signature. One
  // that comes back countersigned is recognised by it instead of by signing its body again (a
  // third Ed25519 signature per job). Bounded, oldest out first; a receipt not found here
  // (signed before a restart, or long ago) is still checked by signing its body again.
  void remember_issued(const ledger::receipt& r);
  bool issued_here(const ledger::receipt& r);
  // A receipt's own checks (for this provider, a payment, issued here, countersigned).
  status check_receipt(const ledger::receipt& r);
  std::mutex issued_mu_;
  std::map<job_id, digest32> issued_;            // under issued_mu_
  std::deque<job_id> issued_order_;              // the same, oldest first (under issued_mu_)

  std::atomic<bool> ledger_failed_{false};
  std::string ledger_error_;                   // under mu_
  unpaid_book unpaid_;                         // under mu_
  std::string unpaid_error_;                   // the unpaid file cannot be kept: no jobs (under mu_)
};

// Spawns the actor shell, a provider_actor (actors/atoms.h): bids, receipts and info answered
// at once, jobs handed to one detached worker per slot (paid on a chain: through the cashier,
// which checks their vouchers one at a time in arrival order), cancellation through the job's flag.
provider_actor spawn_provider(caf::actor_system& sys, std::shared_ptr<provider_core> core);

}  // namespace gpugrid::grid
