// For tests that show work runs at once: counts the calls inside a region and the most there
// ever were at the same time.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace gpugrid::testing {

struct concurrency_gauge {
  std::atomic<int> now{0}, most{0};

  // Counts its scope as one call inside.
  class inside {
   public:
    explicit inside(concurrency_gauge& g) : g_(g) {
      int n = ++g_.now;
      for (int m = g_.most; n > m && !g_.most.compare_exchange_weak(m, n);) {
      }
    }
    ~inside() { --g_.now; }
    inside(const inside&) = delete;
    inside& operator=(const inside&) = delete;

   private:
    concurrency_gauge& g_;
  };

  // Waits (at most `limit`) until `n` calls have been inside at once; false when they never were.
  bool reached(int n, std::chrono::milliseconds limit = std::chrono::seconds(10)) const {
    auto until = std::chrono::steady_clock::now() + limit;
    while (most < n && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return most >= n;
  }
};

}  // namespace gpugrid::testing
