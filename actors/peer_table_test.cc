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
  CHECK(t.gossip(1100, 10000).size() == 1);  // only k(1) was reached; hearsay is not passed on
  t.heard_from(k(2), "ws://b:2", info, true, 900);
  t.heard_from(k(3), "ws://c:3", info, true, 1100);
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
      // A node dials the peers it just learned of and so reaches them (as the grid does).
      for (const auto& e : tables[j].merge_gossip(gi, rounds * 1000, keys[i]))
        tables[j].heard_from(e.key, e.url, info, true, rounds * 1000);
      for (const auto& e : tables[i].merge_gossip(gj, rounds * 1000, keys[j]))
        tables[i].heard_from(e.key, e.url, info, true, rounds * 1000);
    }
  }
  CHECK(full());
  CHECK(rounds <= 6);
}

namespace {
key32 big(uint32_t i, uint8_t tag) {
  key32 x{};
  x[0] = tag;
  x[1] = static_cast<uint8_t>(i);
  x[2] = static_cast<uint8_t>(i >> 8);
  x[3] = static_cast<uint8_t>(i >> 16);
  return x;
}
std::vector<gossip_entry> fakes(uint32_t n, uint8_t tag) {
  std::vector<gossip_entry> out;
  for (uint32_t i = 0; i < n; ++i) out.push_back({big(i, tag), "ws://127.0.0.1:9/" + std::to_string(i), 1000, true});
  return out;
}
}  // namespace

TEST_CASE("one gossip message of 10,000 fake peers cannot flood or poison the table", "[grid][discovery]") {
  peer_table_limits lim;
  lim.max_peers = 1000;
  lim.max_per_source = 100;
  peer_table t(k(0), lim);
  provider_info info;
  t.heard_from(k(1), "ws://honest:1", info, true, 1000);
  auto fresh = t.merge_gossip(fakes(10000, 0xA0), 1000, k(9));
  CHECK(fresh.size() == 100);              // the per-source limit
  CHECK(t.from_source(k(9)) == 100);
  CHECK(t.size() == 101);
  // None of them is passed on: only the honest peer we reached ourselves.
  auto g = t.gossip(1000, 10000);
  REQUIRE(g.size() == 1);
  CHECK(g[0].key == k(1));
  // Reaching one of them moves it out of its source's quota and makes it gossip-worthy.
  t.heard_from(fresh[0].key, fresh[0].url, info, true, 1001);
  CHECK(t.from_source(k(9)) == 99);
  CHECK(t.gossip(1001, 10000).size() == 2);
}

TEST_CASE("the peer table stays bounded and reached peers displace hearsay", "[grid][discovery]") {
  peer_table_limits lim;
  lim.max_peers = 300;
  lim.max_per_source = 100;
  peer_table t(k(0), lim);
  provider_info info;
  for (uint8_t src = 10; src < 20; ++src) t.merge_gossip(fakes(500, src), 1000, k(src));
  CHECK(t.size() == 300);
  // A peer we reach ourselves always gets in, in place of the oldest hearsay.
  t.heard_from(k(1), "ws://honest:1", info, true, 2000);
  CHECK(t.size() == 300);
  REQUIRE(t.find(k(1)) != nullptr);
  CHECK(t.find(k(1))->reached);
  // Eviction frees the sources' quotas again.
  t.evict(100000, 5000, 3);
  CHECK(t.size() == 0);
  for (uint8_t src = 10; src < 20; ++src) CHECK(t.from_source(k(src)) == 0);
}
