// A fixed pool of worker threads for data-parallel loops inside one kernel.
//
// Thread-safety: parallel_for may be called from any number of threads at once (several jobs
// of one session, several slots of a provider). One caller at a time owns the workers; a caller
// that finds them taken runs its loop on its own thread, serially, rather than wait. The calling
// thread takes part in the work. Nested calls from inside a parallel_for body run serially.
//
// Between loops the workers spin for a short while (kernels of one model follow each other
// within microseconds, and waking a sleeping thread costs tens of microseconds), then sleep
// on a condition variable, so an idle pool costs no CPU.
#pragma once

#include <atomic>
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
  void worker_loop(int self);
  // Claims and runs chunks of the loop published as `state` until none is left; self is the
  // thread's number (0 the caller, 1... the workers).
  void work_on(uint64_t state, int self);

  std::vector<std::thread> workers_;
  // The current loop: the generation in the high 32 bits, a bit per claimed chunk in the low 32
  // (all set, kClosed, once the loop is over). A chunk is claimed by a compare-and-swap on the
  // whole word, so a late worker can never claim a chunk of a loop other than the one it read.
  // Chunks are contiguous ranges, and thread t owns the t-th run of them: it claims its own
  // first, in order, and then helps with the others' from their ends. So a thread works on the
  // same part of the index range loop after loop (the same output columns of one convolution
  // after another, whose data is then in its own core's cache), while a thread that lost its
  // core for a while still has its chunks taken over.
  std::atomic<uint64_t> state_{0};
  // The loop's fields, written before its generation is published and read after it is seen.
  std::atomic<const std::function<void(int64_t, int64_t)>*> body_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<int> chunks_{1};
  std::atomic<int64_t> remaining_{0};  // items not yet finished in the current loop
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> owned_{false};  // a caller's loop holds the workers
  std::mutex mu_;
  std::condition_variable wake_;
};

// The number of threads "all cores" means here.
int hardware_threads();

}  // namespace gpugrid
