// Group commit for durable appends: callers that arrive while a group is being written wait in
// a queue; the first caller that finds no write under way takes the queue (up to max_group
// requests) and writes it with one call, then wakes the others. Each caller gets its own
// request's result, and returns only once the write that carried its request is done. Used
// where every write ends in an fsync (the ledger, the receipt outbox): several callers at once
// share one sync instead of waiting for one each.
// Thread-safety: submit() may be called from any number of threads; `write` runs on one of them
// at a time, without the queue's lock held.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace gpugrid {

template <class Request, class Result>
class group_commit {
 public:
  explicit group_commit(size_t max_group) : max_group_(max_group < 1 ? 1 : max_group) {}
  group_commit(const group_commit&) = delete;
  group_commit& operator=(const group_commit&) = delete;

  // write(const std::vector<Request>& group) returns one Result per request, in order.
  template <class Write>
  Result submit(Request request, Write&& write) {
    std::vector<Request> one;
    one.push_back(std::move(request));
    return std::move(submit_all(std::move(one), std::forward<Write>(write)).front());
  }

  // Several requests of one caller, queued together (in order) as if each came from a thread
  // of its own; returns when all are written, their results in the requests' order.
  template <class Write>
  std::vector<Result> submit_all(std::vector<Request> requests, Write&& write) {
    std::vector<waiting> mine;
    mine.reserve(requests.size());
    for (auto& r : requests) mine.push_back(waiting{std::move(r), std::nullopt});
    std::unique_lock<std::mutex> lock(mu_);
    for (auto& w : mine) queue_.push_back(&w);
    auto done = [&] {
      for (const auto& w : mine)
        if (!w.result) return false;
      return true;
    };
    while (!done()) {
      if (writing_) {
        done_.wait(lock);
        continue;
      }
      writing_ = true;
      std::vector<waiting*> group;
      std::vector<Request> batch;
      while (!queue_.empty() && group.size() < max_group_) {
        group.push_back(queue_.front());
        batch.push_back(queue_.front()->request);
        queue_.pop_front();
      }
      lock.unlock();
      std::vector<Result> results = write(batch);
      lock.lock();
      for (size_t i = 0; i < group.size() && i < results.size(); ++i) group[i]->result = std::move(results[i]);
      writing_ = false;
      done_.notify_all();
    }
    std::vector<Result> out;
    out.reserve(mine.size());
    for (auto& w : mine) out.push_back(std::move(*w.result));
    return out;
  }

 private:
  struct waiting {
    Request request;
    std::optional<Result> result;
  };
  const size_t max_group_;
  std::mutex mu_;
  std::deque<waiting*> queue_;  // requests not yet in a group
  bool writing_ = false;        // a group is being written
  std::condition_variable done_;
};

}  // namespace gpugrid
