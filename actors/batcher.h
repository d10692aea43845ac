// Dynamic batching on a provider: jobs for the same model whose inputs have a free first
// (batch) dimension and otherwise equal shapes and dtypes are merged into one execution, and
// the outputs are split back along dim 0.
//
// What is here has no actor runtime and no network, so it is tested alone
// (actors/batcher_test.cc):
//  - batch_signature_of(): the key that decides which jobs may be merged;
//  - batch_queue<T>: jobs waiting, grouped by key; a group is ready when it holds max_batch
//    jobs or its oldest job has waited max_wait (the clock is passed in, never read);
//  - model_allows_batching(), merge_inputs(), split_outputs(): the checks and tensor copies.
// The provider (actors/provider.cc) drives a queue from its actor and runs the groups on its
// workers; verification, pricing and receipts stay per job.
//
// Thread-safety: none; the owner serialises access (the provider actor does).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "actors/messages.h"
#include "base/status.h"
#include "engine/graph.h"
#include "engine/tensor.h"

namespace gpugrid::grid {

struct batch_options {
  int max_batch = 16;         // jobs merged into one execution at most; 1: batching off
  int64_t max_wait_us = 500;  // the longest a job waits for others to join it
  bool enabled() const { return max_batch > 1; }
};

// What jobs must share to be merged: the model, and per input its dtype and every dim but the
// first. Jobs whose inputs cannot be merged (a scalar, a sequence, strings, inputs whose first
// dims differ within the job, a first dim of 0) have no signature.
struct batch_signature {
  digest32 model{};
  std::vector<std::pair<dtype, shape_t>> inputs;  // dtype and dims after the first
  bool operator<(const batch_signature& o) const {
    if (model != o.model) return model < o.model;
    return inputs < o.inputs;
  }
  bool operator==(const batch_signature& o) const { return model == o.model && inputs == o.inputs; }
};
std::optional<batch_signature> batch_signature_of(const digest32& model, const std::vector<tensor>& inputs);
// Rows a job contributes to a merged run: the first dim of its inputs (0 without inputs).
int64_t batch_rows(const std::vector<tensor>& inputs);

// True when every declared input of the model has a known rank of at least 1 and a first dim
// that is free (symbolic or unknown), so jobs may be concatenated along it.
bool model_allows_batching(const graph& g);

// Concatenates each input along dim 0 over the jobs, in order. The jobs must share one
// batch_signature (invalid_input otherwise).
expected<std::vector<tensor>> merge_inputs(const std::vector<const std::vector<tensor>*>& jobs);

// Splits merged outputs along dim 0 into rows[k] rows for job k, in order (copies). nullopt
// when an output is a scalar or sequence or its first dim is not the sum of rows: the model
// does not keep rows apart, and the jobs must run one by one.
std::optional<std::vector<std::vector<tensor>>> split_outputs(const std::vector<tensor>& outputs,
                                                              const std::vector<int64_t>& rows);

// Upper bounds of the batch-size histogram that /metrics shows (plus +Inf).
inline constexpr int kBatchSizeBounds[] = {1, 2, 4, 8, 16, 32, 64};
inline constexpr size_t kBatchSizeBuckets = sizeof(kBatchSizeBounds) / sizeof(kBatchSizeBounds[0]) + 1;
size_t batch_size_bucket(int64_t jobs);  // index into a histogram of kBatchSizeBuckets

// Jobs waiting to run, grouped by signature. Jobs without a signature are groups of one,
// ready at once. Groups come out oldest first.
template <typename T>
class batch_queue {
 public:
  using clock = std::chrono::steady_clock;
  explicit batch_queue(batch_options options) : options_(options) {
    if (options_.max_batch < 1) options_.max_batch = 1;
    if (options_.max_wait_us < 0) options_.max_wait_us = 0;
  }

  void push(std::optional<batch_signature> key, T item, clock::time_point now) {
    ++size_;
    if (!key || !options_.enabled()) {
      singles_.push_back(std::move(item));
      return;
    }
    groups_[*key].items.emplace_back(now, std::move(item));
  }

  // The next group to run at `now`, or nullopt when none is ready: jobs without a signature
  // first, then the ready group whose oldest job came first. A group is ready when it holds
  // max_batch jobs or has waited max_wait; at most max_batch jobs leave at once.
  std::optional<std::vector<T>> pop_ready(clock::time_point now) { return pop(now, false); }
  // The oldest group whether ready or not (for an idle provider, which need not wait).
  std::optional<std::vector<T>> pop_oldest() { return pop(clock::time_point{}, true); }

 private:
  std::optional<std::vector<T>> pop(clock::time_point now, bool any) {
    if (!singles_.empty()) {
      std::vector<T> one;
      one.push_back(std::move(singles_.front()));
      singles_.pop_front();
      --size_;
      return one;
    }
    auto best = groups_.end();
    for (auto it = groups_.begin(); it != groups_.end(); ++it) {
      if (!any && !ready(it->second, now)) continue;
      if (best == groups_.end() || it->second.since() < best->second.since()) best = it;
    }
    if (best == groups_.end()) return std::nullopt;
    group& g = best->second;
    size_t n = std::min(g.items.size(), static_cast<size_t>(options_.max_batch));
    std::vector<T> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      out.push_back(std::move(g.items.front().second));
      g.items.pop_front();
    }
    size_ -= n;
    if (g.items.empty()) groups_.erase(best);
    return out;
  }

 public:
  // When the next group becomes ready by waiting (nullopt: nothing waits, or something is
  // ready now: pop_ready first).
  std::optional<clock::time_point> next_deadline() const {
    std::optional<clock::time_point> t;
    for (const auto& [k, g] : groups_) {
      auto due = g.since() + std::chrono::microseconds(options_.max_wait_us);
      if (!t || due < *t) t = due;
    }
    return t;
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const batch_options& options() const { return options_; }

 private:
  struct group {
    std::deque<std::pair<clock::time_point, T>> items;  // by arrival
    clock::time_point since() const { return items.front().first; }  // the oldest job's arrival
  };
  bool ready(const group& g, clock::time_point now) const {
    return g.items.size() >= static_cast<size_t>(options_.max_batch) ||
           now - g.since() >= std::chrono::microseconds(options_.max_wait_us);
  }

  batch_options options_;
  std::deque<T> singles_;
  std::map<batch_signature, group> groups_;
  size_t size_ = 0;
};

}  // namespace gpugrid::grid

namespace gpugrid::grid {

// Runs a group of jobs that share a batch_signature: once merged (merge_inputs, then
// split_outputs), and when that fails in any way (the merged run fails, or its outputs do not
// split by rows), each job on its own, so one bad job fails alone. A group of one runs alone.
// run_merged gets the merged inputs; run_single gets a job's index. Returns each job's
// outputs or error, in order.
struct batch_run_report {
  std::vector<expected<std::vector<tensor>>> results;
  bool merged = false;        // one merged execution delivered every job's outputs
  bool fell_back = false;     // a merged execution was tried and did not deliver
};
batch_run_report run_batch(const std::vector<const std::vector<tensor>*>& jobs,
                           const std::function<expected<std::vector<tensor>>(const std::vector<tensor>&)>& run_merged,
                           const std::function<expected<std::vector<tensor>>(size_t)>& run_single);

}  // namespace gpugrid::grid
