#include <catch2/catch.hpp>

#include "actors/peer_table.h"

using namespace gpugrid::grid;

namespace {
key32 k(uint8_t b) { key32 x{}; x[0] = b; return x; }
}

TEST_CASE("gossip spreads membership and silent peers are evicted", "[grid][discovery]") {
  peer_table t(k(0));
  provider_info info;
  t.heard_from(k(1), "ws://a:1", info, true, 1000);
  auto fresh = t.merge_gossip({{k(2), "ws://b:2", 900}, {k(0), "ws://me", 900}, {k(1), "ws://a:1", 5000}}, 1000);
  REQUIRE(fresh.size() == 1);  // self ignored, known peer not new
  CHECK(fresh[0].key == k(2));
  CHECK(t.size() == 2);
  CHECK(t.find(k(1))->last_seen_ms == 1000);  // gossip never overrides what we heard directly
  // A lying gossiper cannot push a time into the future.
  t.merge_gossip({{k(3), "ws://c:3", 999999}}, 1100);
  CHECK(t.find(k(3))->last_seen_ms == 1100);
  CHECK(t.gossip(1100, 10000).size() == 3);
  t.missed_ping(k(1));
  t.missed_ping(k(1));
  t.missed_ping(k(1));
  auto gone = t.evict(4500, 3500, 2);
  CHECK(gone.size() == 2);      // k(1) missed pings, k(2) is silent for 3600 ms
  CHECK(t.find(k(3)) != nullptr);
  // Gossip carries each peer's role: k(3) was announced as a provider, k(4) as a client.
  t.merge_gossip({{k(4), "ws://d:4", 1100, false}}, 1100);
  REQUIRE(t.providers().size() == 1);
  CHECK(t.providers()[0].key == k(3));
}

TEST_CASE("gossip among many peers converges to full membership", "[grid][discovery]") {
  // 200 nodes, each starting with one bootstrap peer (node 0); rounds of random exchange.
  const int n = 200;
  std::vector<peer_table> tables;
  for (int i = 0; i < n; ++i) tables.emplace_back(k(static_cast<uint8_t>(i % 256)));
  std::vector<key32> keys(n);
  for (int i = 0; i < n; ++i) { keys[i] = key32{}; keys[i][0] = static_cast<uint8_t>(i % 256); keys[i][1] = static_cast<uint8_t>(i / 256 + 1); }
  tables.clear();
  for (int i = 0; i < n; ++i) tables.emplace_back(keys[i]);
  provider_info info;
  for (int i = 1; i < n; ++i) {
    tables[i].heard_from(keys[0], "ws://n0", info, true, 0);
    tables[0].heard_from(keys[i], "ws://n" + std::to_string(i), info, true, 0);
  }
  uint32_t seed = 7;
  int rounds = 0;
  auto full = [&] {
    for (auto& t : tables) if (t.size() != static_cast<size_t>(n - 1)) return false;
    return true;
  };
  while (!full() && rounds < 20) {
    ++rounds;
    for (int i = 0; i < n; ++i) {
      seed = seed * 1103515245u + 12345u;
      int j = static_cast<int>((seed >> 8) % n);
      if (j == i) continue;
      auto gi = tables[i].gossip(rounds * 1000, 60000);
      auto gj = tables[j].gossip(rounds * 1000, 60000);
      gi.push_back({keys[i], "ws://n" + std::to_string(i), rounds * 1000});
      gj.push_back({keys[j], "ws://n" + std::to_string(j), rounds * 1000});
      tables[j].merge_gossip(gi, rounds * 1000);
      tables[i].merge_gossip(gj, rounds * 1000);
    }
  }
  CHECK(full());
  CHECK(rounds <= 6);
}
