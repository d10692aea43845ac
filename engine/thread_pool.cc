#include "engine/thread_pool.h"

#include <algorithm>

namespace gpugrid {

namespace {
thread_local bool in_parallel_region = false;
}

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

thread_pool::thread_pool(int threads) {
  if (threads <= 0) threads = hardware_threads();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::worker_loop() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    ++active_;
    while (next_ < n_) {
      int64_t b = next_;
      int64_t e = std::min(n_, b + chunk_);
      next_ = e;
      const auto* body = body_;
      lock.unlock();
      in_parallel_region = true;
      (*body)(b, e);
      in_parallel_region = false;
      lock.lock();
    }
    if (--active_ == 0) done_.notify_all();
  }
}

void thread_pool::parallel_for(int64_t n, int64_t grain,
                               const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int threads = size();
  if (threads == 1 || n <= grain || in_parallel_region) {
    body(0, n);
    return;
  }
  int64_t chunks = std::min<int64_t>(threads * 4, (n + grain - 1) / grain);
  int64_t chunk = (n + chunks - 1) / chunks;
  std::unique_lock<std::mutex> lock(mu_);
  body_ = &body;
  n_ = n;
  chunk_ = chunk;
  next_ = 0;
  ++generation_;
  wake_.notify_all();
  ++active_;
  while (next_ < n_) {
    int64_t b = next_;
    int64_t e = std::min(n_, b + chunk_);
    next_ = e;
    lock.unlock();
    in_parallel_region = true;
    body(b, e);
    in_parallel_region = false;
    lock.lock();
  }
  --active_;
  done_.wait(lock, [&] { return active_ == 0; });
  body_ = nullptr;
  n_ = 0;
}

}  // namespace gpugrid
