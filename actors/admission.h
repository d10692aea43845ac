// Provider admission: whether a provider takes a job, as plain decisions on plain facts (no
// locks, no clock, no I/O), so each rule has its own test. The provider gathers the facts
// (actors/provider.cc) and acts on the decision; model uploads have their own quotas in
// net/reassembly.h (bytes that arrived, per connection and per node).
//
// Two moments: at the bid (admit_bid: may this client get a bid at all, and at what price) and
// when the job arrives (admit_execute: the same client and ledger rules again, since a standing
// quote can skip the bid). Rules are checked in a fixed order and the first that refuses gives
// the reason: draining, ledger, unpaid jobs, model size, memory budget, a model known not to
// run here, capacity, price.
//
// Extension point: a payment check (a voucher for the job) is one more rule in admit_execute,
// with its own decline_reason and detail; see the comment there.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "actors/messages.h"
#include "base/status.h"

namespace gpugrid::grid {

struct admission {
  bool accepted = true;
  decline_reason reason = decline_reason::none;
  std::string detail;             // one line naming what is wrong; empty when accepted
  static admission accept() { return {}; }
  static admission decline(decline_reason r, std::string why) { return {false, r, std::move(why)}; }
};

// What the provider knows when a request arrives.
struct admission_facts {
  bool draining = false;
  bool ledger_failed = false;
  std::string ledger_error;
  int unpaid_for_client = 0;      // jobs done for this client whose receipts are not countersigned
  int unpaid_credit = 8;          // the most a client may owe
  int64_t model_bytes = 0;        // announced by the client (bid) or received (execute)
  int64_t max_model_bytes = 0;
  int64_t memory_budget = 0;      // bytes of loaded models this provider keeps
  std::optional<std::string> bad_model;  // why this model cannot run here, when known
  int busy = 0;                   // jobs running or queued
  int slots = 1;
  int capacity = 0;               // jobs running or queued at most (0: twice the slots)
  double price = 0;               // what this provider asks for the job now
  double max_price = -1;          // the client's limit; < 0: none
};

admission admit_bid(const admission_facts& f);
// The job itself; `offered` is the price the client pays, `required` what the job costs here
// (0: unknown until it runs; the run is then metered).
admission admit_execute(const admission_facts& f, double offered, double required);

// A job that arrives over the network (the node checks it before the provider sees it): it
// must come from this provider's bid (for this job, or a standing bid to this client for this
// model) at that price, while the provider takes jobs, once, and within the bounded queue.
enum class award_refusal { none, not_awarded, underpaid, draining, duplicate, queue_full };
struct award_facts {
  double bid_price = -1;          // the bid this job comes from; < 0: none (or it expired)
  double offered = 0;             // the price the job carries
  bool draining = false;
  bool already_running = false;   // a job with this id runs here
  size_t queued = 0;              // jobs running or waiting here
  size_t queue_limit = 4;
};
struct award_decision {
  award_refusal why = award_refusal::none;
  std::string detail;
  bool ok() const { return why == award_refusal::none; }
};
award_decision admit_award(const award_facts& f);

// Jobs done but not yet paid (receipt not countersigned), per client. Persisted when given a
// file: one line per change ("U <job> <client>" done, "P <job>" paid), appended with O_APPEND,
// so a crash of the process loses nothing that was written and a torn last line is ignored at
// the next start; the file is rewritten (temporary file, fsync, rename) when it grows past
// four times what it holds. Jobs that the provider's ledger already records are dropped at
// start (the receipt arrived just before a crash). Bounded: past max_jobs, the oldest are
// forgotten (their clients get that credit back). Not thread-safe: the provider calls it under
// its lock.
class unpaid_book {
 public:
  static constexpr size_t max_jobs = 65536;
  // The file is rewritten with only the unpaid jobs once it has this many lines and four times
  // as many as there are unpaid jobs (each rewrite is a new file and an fsync: at 64 lines a
  // busy provider made one every 32 jobs).
  static constexpr size_t compact_after_lines = 4096;
  // path empty: in memory only. is_recorded: whether the ledger already holds a job (may be empty).
  static expected<unpaid_book> open(const std::string& path,
                                    const std::function<bool(const job_id&)>& is_recorded = {});
  unpaid_book() = default;

  // A job done for `client`; writes the line (a write error is returned; the count is kept).
  status add(const job_id& job, const key32& client);
  // The job was paid; unknown jobs are ignored.
  status paid(const job_id& job);
  int count(const key32& client) const;
  size_t size() const { return jobs_.size(); }

 private:
  status append(const std::string& line);
  status compact();
  void forget(const job_id& job);

  // The log, kept open for appending (two lines a job); closed when a rewrite replaces it.
  struct log_fd {
    int fd = -1;
    log_fd() = default;
    log_fd(log_fd&& o) noexcept;
    log_fd& operator=(log_fd&& o) noexcept;
    ~log_fd();
  };

  std::string path_;
  log_fd log_;
  std::map<job_id, key32> jobs_;
  std::deque<job_id> order_;      // oldest first; entries already paid are skipped
  std::map<key32, int> by_client_;
  size_t lines_ = 0;              // lines in the file
};

}  // namespace gpugrid::grid
