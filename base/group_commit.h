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
    std::unique_lock<std::mutex> lock(mu_);
    waiting me{std::move(request), std::nullopt};
    queue_.push_back(&me);
    while (!me.result) {
      if (writing_) {
        done_.wait(lock);
        continue;
      }
      writing_ = true;
      std::vector<waiting*> group;
      std::vector<Request> requests;
      while (!queue_.empty() && group.size() < max_group_) {
        group.push_back(queue_.front());
        requests.push_back(queue_.front()->request);
        queue_.pop_front();
      }
      lock.unlock();
      std::vector<Result> results = write(requests);
      lock.lock();
      for (size_t i = 0; i < group.size() && i < results.size(); ++i) group[i]->result = std::move(results[i]);
      writing_ = false;
      done_.notify_all();
    }
    return std::move(*me.result);
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
