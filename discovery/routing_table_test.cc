#include "discovery/routing_table.h"

#include <catch2/catch.hpp>

using namespace gpugrid::discovery;

namespace {

node_id id_with(uint8_t first, uint8_t last) {
  node_id id{};
  id[0] = first;
  id[31] = last;
  return id;
}

contact c_of(const node_id& id) { return contact{id, "ws://" + short_hex(id) + ":1"}; }

}  // namespace

TEST_CASE("routing table files contacts by shared prefix and returns the closest", "[discovery]") {
  routing_table t(node_id{}, 20, 2);
  for (int i = 1; i <= 50; ++i) t.seen(c_of(id_with(static_cast<uint8_t>(i), 0)), 0, 1000);
  CHECK(t.size() == 50);
  CHECK(t.bucket_index(id_with(0x80, 0)) == 0);
  CHECK(t.bucket_index(id_with(0x01, 0)) == 7);
  const auto near = t.closest(id_with(3, 0), 3);
  REQUIRE(near.size() == 3);
  CHECK(near[0].id == id_with(3, 0));
  CHECK(near[1].id == id_with(2, 0));
  CHECK(near[2].id == id_with(1, 0));
  // Client-mode contacts (no address) and self are never kept.
  t.seen(contact{id_with(99, 1), ""}, 0, 1000);
  t.seen(contact{node_id{}, "ws://self:1"}, 0, 1000);
  CHECK(t.size() == 50);
}

TEST_CASE("a full bucket keeps live old contacts and evicts failing ones", "[discovery]") {
  routing_table t(node_id{}, 2, 2);
  const node_id a = id_with(0x80, 1), b = id_with(0x80, 2), c = id_with(0x80, 3);
  t.seen(c_of(a), 0, 1000);
  t.seen(c_of(b), 0, 1000);
  // Full and the oldest is fresh: c waits, nobody to ping.
  CHECK_FALSE(t.seen(c_of(c), 10, 1000).has_value());
  CHECK_FALSE(t.contains(c));
  // Full and the oldest is stale: ping it.
  auto ping = t.seen(c_of(c), 5000, 1000);
  REQUIRE(ping.has_value());
  CHECK(ping->id == a);
  // One failure is forgiven, the second evicts, and the replacement moves in.
  t.failed(a);
  CHECK(t.contains(a));
  t.failed(a);
  CHECK_FALSE(t.contains(a));
  CHECK(t.contains(c));
  CHECK(t.size() == 2);
}

TEST_CASE("random ids land in the bucket asked for", "[discovery]") {
  node_id self{};
  self[0] = 0x5a;
  routing_table t(self, 20, 2);
  std::array<uint8_t, 32> rnd;
  rnd.fill(0xa7);
  for (int i : {0, 1, 7, 8, 100, 255}) CHECK(t.bucket_index(t.random_id_in_bucket(i, rnd)) == i);
}
