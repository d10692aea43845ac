#include "engine/thread_pool.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using gpugrid::thread_pool;

TEST_CASE("thread_pool covers every index exactly once, loop after loop", "[thread_pool]") {
  for (int threads : {1, 2, 3, 8}) {
    thread_pool pool(threads);
    REQUIRE(pool.size() == threads);
    std::vector<std::atomic<int>> hits(5000);
    std::atomic<int> bad_chunks{0};  // (Catch2 assertions are not for worker threads)
    for (int round = 0; round < 2000; ++round) {
      const int64_t n = 1 + (round * 37) % 5000;
      const int64_t grain = 1 + round % 7;
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        if (b >= e) ++bad_chunks;
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < 5000; ++i) {
        const int want = i < n ? 1 : 0;
        if (hits[static_cast<size_t>(i)].load() != want) {
          CAPTURE(threads, round, n, i);
          FAIL("index ran " << hits[static_cast<size_t>(i)].load() << " times");
        }
        hits[static_cast<size_t>(i)] = 0;
      }
    }
    REQUIRE(bad_chunks.load() == 0);
  }
}

TEST_CASE("thread_pool: sleeping workers wake for the next loop, nested loops run serially", "[thread_pool]") {
  thread_pool pool(3);
  std::atomic<int64_t> sum{0};
  for (int round = 0; round < 3; ++round) {
    // Long enough for the workers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
      pool.parallel_for(10, 1, [&](int64_t bb, int64_t ee) { sum += ee - bb; });
    });
  }
  // Each outer chunk adds 10 from its nested loop; there are at most 12 chunks per loop.
  const int64_t base = 3 * (999 * 1000 / 2);
  REQUIRE(sum.load() > base);
  REQUIRE((sum.load() - base) % 10 == 0);
}

TEST_CASE("thread_pool is destroyed cleanly while its workers spin or sleep", "[thread_pool]") {
  for (int i = 0; i < 50; ++i) {
    thread_pool pool(4);
    std::atomic<int> c{0};
    pool.parallel_for(100, 1, [&](int64_t b, int64_t e) { c += static_cast<int>(e - b); });
    REQUIRE(c.load() == 100);
    if (i % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST_CASE("thread_pool: loops from several threads at once each cover their indices exactly once", "[thread_pool]") {
  gpugrid::thread_pool pool(4);
  constexpr int kCallers = 4;
  constexpr int64_t kN = 20000;
  std::vector<std::vector<std::atomic<int>>> hits(kCallers);
  for (auto& h : hits) h = std::vector<std::atomic<int>>(kN);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c)
    callers.emplace_back([&, c] {
      for (int round = 0; round < 50; ++round)
        pool.parallel_for(kN, 64, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[c][i].fetch_add(1, std::memory_order_relaxed);
        });
    });
  for (auto& t : callers) t.join();
  for (int c = 0; c < kCallers; ++c) {
    int64_t wrong = 0;
    for (int64_t i = 0; i < kN; ++i) wrong += hits[c][i].load() != 50;
    INFO("caller " << c);
    CHECK(wrong == 0);
  }
}

TEST_CASE("thread_pool: the chunks of a worker that stalls are taken over by the caller", "[thread_pool]") {
  thread_pool pool(2);
  const auto caller = std::this_thread::get_id();
  for (int round = 0; round < 5; ++round) {
    std::atomic<int> by_caller{0}, by_worker{0};
    std::atomic<bool> stalled{false};
    pool.parallel_for(8, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (std::this_thread::get_id() == caller) {
          ++by_caller;
          continue;
        }
        ++by_worker;
        // The worker's first item holds it up until the caller has done its own four and taken
        // over the worker's other three (at most 5 s: without the take-over the worker would
        // go on to do them itself, and the check below fails).
        if (!stalled.exchange(true)) {
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
          while (by_caller.load() < 7 && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
    });
    CHECK(by_caller + by_worker == 8);
    CHECK(by_worker <= 1);
  }
}
