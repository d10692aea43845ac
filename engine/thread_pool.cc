#include "engine/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GG_PAUSE() _mm_pause()
#else
#define GG_PAUSE() std::this_thread::yield()
#endif

namespace gpugrid {

namespace {
thread_local bool in_parallel_region = false;

constexpr uint64_t kClosed = 0xffffffffu;
// How long an idle worker spins before it sleeps (GPUGRID_SPIN_US overrides it).
std::chrono::microseconds spin_time() {
  static const std::chrono::microseconds t = [] {
    const char* e = std::getenv("GPUGRID_SPIN_US");
    long v = e ? std::strtol(e, nullptr, 10) : 200;
    return std::chrono::microseconds(std::clamp<long>(v, 0, 1000000));
  }();
  return t;
}

// Spinning longer than this also yields the core now and then: when the machine gives the
// process fewer cores than it has threads (a busy host, a shared VM), a thread that only spins
// would take the time slice of the very thread it waits for.
constexpr auto kPureSpin = std::chrono::microseconds(20);

uint64_t generation_of(uint64_t s) { return s >> 32; }
uint64_t index_of(uint64_t s) { return s & 0xffffffffu; }
}  // namespace

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

thread_pool::thread_pool(int threads) {
  if (threads <= 0) threads = hardware_threads();
  state_.store(kClosed);
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

void thread_pool::work_on(uint64_t s) {
  for (;;) {
    if (index_of(s) == kClosed) return;
    // The loop's fields are those of s's generation or newer; a newer one fails the CAS.
    const int64_t n = n_.load(std::memory_order_relaxed), chunk = chunk_.load(std::memory_order_relaxed);
    const int64_t b = static_cast<int64_t>(index_of(s));
    if (b >= n) return;
    const int64_t e = std::min(n, b + chunk);
    const uint64_t next = (s & ~uint64_t{0xffffffffu}) | static_cast<uint64_t>(e);
    if (!state_.compare_exchange_weak(s, next, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // The chunk [b, e) is ours: the loop cannot end (nor its body go away) before we finish it.
    const bool nested = in_parallel_region;
    in_parallel_region = true;
    (*body_.load(std::memory_order_relaxed))(b, e);
    in_parallel_region = nested;
    remaining_.fetch_sub(e - b, std::memory_order_acq_rel);
    s = next;
  }
}

void thread_pool::worker_loop() {
  uint64_t seen = generation_of(state_.load());
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    if (generation_of(s) == seen) {
      // Spin a little for the next loop, then sleep.
      const auto start = std::chrono::steady_clock::now();
      const auto until = start + spin_time(), polite = start + kPureSpin;
      int spins = 0;
      while (generation_of(s = state_.load(std::memory_order_acquire)) == seen && !stop_.load()) {
        GG_PAUSE();
        if (++spins % 64 == 0) {
          const auto now = std::chrono::steady_clock::now();
          if (now > until) break;
          if (now > polite) std::this_thread::yield();
        }
      }
      if (generation_of(s) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, [&] { return stop_.load() || generation_of(state_.load()) != seen; });
        sleepers_.fetch_sub(1);
        if (stop_) return;
        continue;
      }
    }
    if (stop_) return;
    seen = generation_of(s);
    work_on(s);
  }
}

void thread_pool::parallel_for(int64_t n, int64_t grain,
                               const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = size();
  if (threads == 1 || n <= grain || in_parallel_region || n >= int64_t{kClosed}) {
    body(0, n);
    return;
  }
  // Another thread's loop has the workers: this one runs here, on its own, with the same
  // answer (the loop's fields below belong to one loop at a time).
  if (owned_.exchange(true, std::memory_order_acquire)) {
    body(0, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(threads * 4, (n + grain - 1) / grain);
  // Publish: the fields first, then the new generation with index 0 (release).
  body_.store(&body, std::memory_order_relaxed);
  n_.store(n, std::memory_order_relaxed);
  chunk_.store((n + chunks - 1) / chunks, std::memory_order_relaxed);
  remaining_.store(n, std::memory_order_relaxed);
  const uint64_t gen = generation_of(state_.load()) + 1;
  state_.store((gen & 0xffffffffu) << 32, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    wake_.notify_all();
  }
  work_on(state_.load(std::memory_order_acquire));
  // Wait for the chunks other threads claimed.
  const auto polite = std::chrono::steady_clock::now() + kPureSpin;
  int spins = 0;
  while (remaining_.load(std::memory_order_acquire) > 0) {
    if (spins < 1 << 30) ++spins;
    if (spins % 64 == 0 && std::chrono::steady_clock::now() > polite) std::this_thread::yield();
    else GG_PAUSE();
  }
  // Close the loop so that no late worker can claim from it.
  state_.store(((gen & 0xffffffffu) << 32) | kClosed, std::memory_order_release);
  owned_.store(false, std::memory_order_release);
}

}  // namespace gpugrid
