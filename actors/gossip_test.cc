#include <catch2/catch.hpp>

#include <set>

#include "actors/gossip.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {
std::vector<gossip_entry> entries(size_t n, bool providers_only = true) {
  std::vector<gossip_entry> v;
  for (size_t i = 0; i < n; ++i) {
    gossip_entry e;
    e.key[0] = static_cast<uint8_t>(i);
    e.key[1] = static_cast<uint8_t>(i >> 8);
    e.url = "ws://10.0.0." + std::to_string(i % 250) + ":" + std::to_string(7000 + i);
    e.is_provider = providers_only || i % 2 == 0;
    v.push_back(e);
  }
  return v;
}
}  // namespace

TEST_CASE("gossip: a client dials only providers, within its provider budget", "[grid][gossip]") {
  dial_budget b;
  b.max_providers = 5;
  b.providers = 2;
  auto d = choose_dials(entries(20, false), b, {});
  REQUIRE(d.size() == 3);
  for (const auto& e : d) CHECK(e.is_provider);
  b.providers = 5;
  CHECK(choose_dials(entries(20), b, {}).empty());
}

TEST_CASE("gossip: a provider dials any peer, within its neighbour budget and the concurrent-dial cap", "[grid][gossip]") {
  dial_budget b;
  b.offering = true;
  b.max_neighbors = 100;
  b.max_concurrent = 16;
  b.dialing = 4;
  CHECK(choose_dials(entries(50, false), b, {}).size() == 12);  // 16 in flight at most
  b.dialing = 0;
  b.outbound = 95;
  CHECK(choose_dials(entries(50, false), b, {}).size() == 5);
}

TEST_CASE("gossip: skipped peers take no dial", "[grid][gossip]") {
  dial_budget b;
  b.max_providers = 3;
  auto all = entries(10);
  auto d = choose_dials(all, b, [](const gossip_entry& e) { return e.key[0] < 5; });
  REQUIRE(d.size() == 3);
  CHECK(d[0].key[0] == 5);
}

TEST_CASE("gossip: pages hold at most page_size peers, and an empty table is one empty page", "[grid][gossip]") {
  auto pages = page_gossip(entries(2500), 1000);
  REQUIRE(pages.size() == 3);
  CHECK(pages[0].peers.size() == 1000);
  CHECK(pages[2].peers.size() == 500);
  std::set<std::string> urls;
  for (const auto& p : pages)
    for (const auto& x : p.peers) urls.insert(x.url);
  CHECK(urls.size() == 2500);
  CHECK(pages[0].peers[0].role == net::node_role::provider);
  auto none = page_gossip({}, 1000);
  REQUIRE(none.size() == 1);
  CHECK(none[0].peers.empty());
}
