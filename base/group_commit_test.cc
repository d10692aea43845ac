#include "base/group_commit.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using gpugrid::group_commit;

TEST_CASE("group_commit gives each caller its own result, and callers that wait share a write", "[group_commit]") {
  group_commit<int, int> commits(4);
  std::atomic<int> writes{0}, in_write{0}, overlapped{0}, too_big{0};
  auto write = [&](const std::vector<int>& group) {
    if (in_write.fetch_add(1) != 0) ++overlapped;
    if (group.size() > 4) ++too_big;
    ++writes;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // a sync
    std::vector<int> out;
    for (int x : group) out.push_back(x * 10);
    in_write.fetch_sub(1);
    return out;
  };
  constexpr int kThreads = 8, kEach = 25;
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int j = 0; j < kEach; ++j) {
        const int x = t * 1000 + j;
        if (commits.submit(x, write) != x * 10) ++wrong;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(wrong == 0);
  CHECK(overlapped == 0);  // one write at a time
  CHECK(too_big == 0);     // at most max_group requests per write
  CHECK(writes < kThreads * kEach);  // eight callers at once: some writes carried several
}

TEST_CASE("group_commit takes several requests of one caller in order, with other callers' requests", "[group_commit]") {
  group_commit<int, int> commits(8);
  std::atomic<int> writes{0}, overlapped{0}, in_write{0};
  auto write = [&](const std::vector<int>& group) {
    if (in_write.fetch_add(1) != 0) ++overlapped;
    ++writes;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::vector<int> out;
    for (int x : group) out.push_back(x + 1);
    in_write.fetch_sub(1);
    return out;
  };
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  // Four callers of 50 requests each (more than a group holds) and four single ones.
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::vector<int> mine;
      for (int j = 0; j < 50; ++j) mine.push_back(t * 1000 + j);
      auto got = commits.submit_all(mine, write);
      if (got.size() != mine.size()) ++wrong;
      for (size_t j = 0; j < got.size() && j < mine.size(); ++j)
        if (got[j] != mine[j] + 1) ++wrong;
    });
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int j = 0; j < 10; ++j)
        if (commits.submit(9000 + t * 100 + j, write) != 9000 + t * 100 + j + 1) ++wrong;
    });
  for (auto& t : ts) t.join();
  CHECK(wrong == 0);
  CHECK(overlapped == 0);
  CHECK(writes >= 4 * 50 / 8);  // no write carries more than max_group
  CHECK(writes < 4 * 50 + 4 * 10);
  CHECK(commits.submit_all({}, write).empty());
}
