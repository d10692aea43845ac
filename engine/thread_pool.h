// A fixed pool of worker threads for data-parallel loops inside one kernel.
//
// Thread-safety: parallel_for may be called from one thread at a time per pool (the executor
// runs one node at a time per job); the calling thread takes part in the work. Nested calls
// from inside a parallel_for body run serially.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gpugrid {

class thread_pool {
 public:
  // threads <= 0 means one per hardware thread. threads == 1 runs everything on the caller.
  explicit thread_pool(int threads = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls body(begin, end) over [0, n) in chunks of at least grain items, in parallel.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

 private:
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0, chunk_ = 0, next_ = 0;
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

// The number of threads "all cores" means here.
int hardware_threads();

}  // namespace gpugrid
