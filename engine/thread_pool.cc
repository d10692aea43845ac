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

constexpr uint64_t kClosed = 0xffffffffu;  // every chunk claimed: the loop is over
// A loop has up to this many chunks, one bit each in the state word (all 32 set means closed).
constexpr int kMaxChunks = 31;
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
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::work_on(uint64_t s, int self) {
  const uint64_t gen = generation_of(s);
  if (index_of(s) == kClosed) return;
  // The loop's fields are those of s's generation or newer; a newer one fails the CAS below,
  // and a chunk claimed with it is of this generation, whose fields stay until it is done.
  const int chunks = chunks_.load(std::memory_order_relaxed);
  const int threads = size();
  if (chunks <= 0 || chunks > kMaxChunks) return;
  // This thread's own chunks first, in order; then the others', each thread's from its last
  // chunk back (its owner works from the front).
  int order[kMaxChunks];
  int k = 0;
  const auto first_of = [&](int t) { return static_cast<int>(int64_t{chunks} * t / threads); };
  for (int c = first_of(self); c < first_of(self + 1); ++c) order[k++] = c;
  for (int d = 1; d < threads; ++d) {
    const int t = (self + d) % threads;
    for (int c = first_of(t + 1) - 1; c >= first_of(t); --c) order[k++] = c;
  }
  const int64_t n = n_.load(std::memory_order_relaxed);
  for (int i = 0; i < k; ++i) {
    const uint64_t bit = uint64_t{1} << order[i];
    uint64_t cur = state_.load(std::memory_order_acquire);
    bool got = false;
    while (generation_of(cur) == gen && !(cur & bit)) {
      if (state_.compare_exchange_weak(cur, cur | bit, std::memory_order_acq_rel, std::memory_order_acquire)) {
        got = true;
        break;
      }
    }
    if (generation_of(cur) != gen) return;
    if (!got) continue;
    // Chunk order[i] is ours: the loop cannot end (nor its body go away) before we finish it.
    const int64_t b = n * order[i] / chunks, e = n * (order[i] + 1) / chunks;
    const bool nested = in_parallel_region;
    in_parallel_region = true;
    if (e > b) (*body_.load(std::memory_order_relaxed))(b, e);
    in_parallel_region = nested;
    remaining_.fetch_sub(e - b, std::memory_order_acq_rel);
  }
}

void thread_pool::worker_loop(int self) {
  // The generation at construction (0): a loop published before this thread got here is one
  // it has not seen (reading the state here instead would skip that first loop).
  uint64_t seen = 0;
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
    work_on(s, self);
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
  const int64_t chunks = std::min<int64_t>({int64_t{threads} * 4, (n + grain - 1) / grain, kMaxChunks});
  // Publish: the fields first, then the new generation with no chunk claimed (release).
  body_.store(&body, std::memory_order_relaxed);
  n_.store(n, std::memory_order_relaxed);
  chunks_.store(static_cast<int>(chunks), std::memory_order_relaxed);
  remaining_.store(n, std::memory_order_relaxed);
  const uint64_t gen = generation_of(state_.load()) + 1;
  state_.store((gen & 0xffffffffu) << 32, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    wake_.notify_all();
  }
  work_on(state_.load(std::memory_order_acquire), 0);
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
