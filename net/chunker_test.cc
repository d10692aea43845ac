// Chunked transfers: splitting, reassembly in any order, and every lie a sender can tell.
#include "net/chunker.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "net/codec.h"
#include "net/hash.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

std::string payload(size_t n, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

using clk = reassembler::clock;

}  // namespace

TEST_CASE("chunk sizes fit the peer's frame limit", "[net][chunker]") {
  CHECK(choose_chunk_bytes(0) == kDefaultChunkBytes);
  CHECK(choose_chunk_bytes(64u << 20) == kDefaultChunkBytes);
  CHECK(choose_chunk_bytes(1u << 20) == (1u << 20) - kChunkFrameOverhead);
  CHECK(choose_chunk_bytes(100) == 1024);
  CHECK(chunk_count(0, 10) == 0);
  CHECK(chunk_count(10, 10) == 1);
  CHECK(chunk_count(11, 10) == 2);

  // A full chunk, encoded, really is below the frame limit.
  const uint64_t limit = 256 << 10;
  std::string data = payload(3 * limit);
  model_put plan = plan_transfer(blake2b_256(data), data.size(), choose_chunk_bytes(limit));
  auto f = encode(chunk_at(plan, data, 0), identity::generate(), 5);
  REQUIRE(f.has_value());
  CHECK(f->size() <= limit);
}

TEST_CASE("a payload split into chunks reassembles in any order", "[net][chunker]") {
  std::string data = payload(100000);
  model_put plan = plan_transfer(blake2b_256(data), data.size(), 4096);
  uint32_t n = chunk_count(plan.total_bytes, plan.chunk_bytes);
  REQUIRE(n == 25);
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < n; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));

  reassembler r;
  REQUIRE(r.begin(plan).is_ok());
  CHECK(r.in_progress(plan.model_hash));
  CHECK(r.begin(plan).is_ok());  // announcing again is harmless
  for (size_t k = 0; k < order.size(); ++k) {
    auto got = r.add(chunk_at(plan, data, order[k]));
    REQUIRE(got.has_value());
    if (k + 1 < order.size()) {
      CHECK_FALSE(got->has_value());
      CHECK(r.progress(plan.model_hash) == Approx(double(k + 1) / n));
    } else {
      REQUIRE(got->has_value());
      CHECK((*got)->hash == plan.model_hash);
      CHECK(*(*got)->bytes == data);
    }
  }
  CHECK_FALSE(r.in_progress(plan.model_hash));
  CHECK(r.committed_bytes() == 0);
}

TEST_CASE("empty and single-chunk payloads", "[net][chunker]") {
  reassembler r;
  std::string one = payload(10);
  model_put p1 = plan_transfer(blake2b_256(one), one.size(), 4096);
  REQUIRE(r.begin(p1).is_ok());
  auto got = r.add(chunk_at(p1, one, 0));
  REQUIRE(got.has_value());
  REQUIRE(got->has_value());
  CHECK(*(*got)->bytes == one);
}

TEST_CASE("a transfer that lies is dropped", "[net][chunker]") {
  std::string data = payload(10000);
  model_put plan = plan_transfer(blake2b_256(data), data.size(), 1024);
  reassembler_options o;
  o.max_transfer_bytes = 1 << 20;
  o.max_total_bytes = 1 << 21;
  o.max_transfers = 2;
  reassembler r(o);

  SECTION("about its hash") {
    model_put lie = plan;
    lie.model_hash = blake2b_256("something else");
    REQUIRE(r.begin(lie).is_ok());
    expected<std::optional<completed_transfer>> got = std::optional<completed_transfer>();
    for (uint32_t i = 0; i < 10; ++i) {
      model_chunk c = chunk_at(plan, data, i);
      c.model_hash = lie.model_hash;
      got = r.add(c);
    }
    REQUIRE_FALSE(got.has_value());
    CHECK_THAT(got.error().message(), Catch::Contains("not the announced hash"));
    CHECK_FALSE(r.in_progress(lie.model_hash));
    CHECK(r.committed_bytes() == 0);
  }
  SECTION("about its size") {
    model_put big = plan;
    big.total_bytes = 2 << 20;
    auto s = r.begin(big);
    CHECK_FALSE(s.is_ok());
    CHECK_THAT(s.message(), Catch::Contains("exceed the limit"));
    REQUIRE(r.begin(plan).is_ok());
    model_chunk c = chunk_at(plan, data, 0);
    c.data.pop_back();
    auto got = r.add(c);
    REQUIRE_FALSE(got.has_value());
    CHECK_THAT(got.error().message(), Catch::Contains("has 1023 bytes, expected 1024"));
    CHECK_FALSE(r.in_progress(plan.model_hash));
  }
  SECTION("about the last chunk's size") {
    REQUIRE(r.begin(plan).is_ok());
    model_chunk c = chunk_at(plan, data, 9);  // 10000 - 9*1024 = 784 bytes
    CHECK(c.data.size() == 784);
    c.data += "x";
    CHECK_FALSE(r.add(c).has_value());
  }
  SECTION("about chunk indices") {
    REQUIRE(r.begin(plan).is_ok());
    model_chunk c = chunk_at(plan, data, 0);
    c.index = 10;
    auto got = r.add(c);
    REQUIRE_FALSE(got.has_value());
    CHECK_THAT(got.error().message(), Catch::Contains("past the last chunk"));
  }
  SECTION("by sending a chunk twice") {
    REQUIRE(r.begin(plan).is_ok());
    REQUIRE(r.add(chunk_at(plan, data, 3)).has_value());
    auto got = r.add(chunk_at(plan, data, 3));
    REQUIRE_FALSE(got.has_value());
    CHECK_THAT(got.error().message(), Catch::Contains("twice"));
  }
  SECTION("by sending chunks nobody announced") {
    auto got = r.add(chunk_at(plan, data, 0));
    REQUIRE_FALSE(got.has_value());
    CHECK_THAT(got.error().message(), Catch::Contains("not announced"));
  }
  SECTION("with silly chunk sizes") {
    model_put p = plan;
    p.chunk_bytes = 0;
    CHECK_FALSE(r.begin(p).is_ok());
    p.chunk_bytes = 128u << 20;
    CHECK_FALSE(r.begin(p).is_ok());
    p.chunk_bytes = 1;  // ten thousand one-byte chunks: refused before anything is set up
    CHECK_FALSE(r.begin(p).is_ok());
  }
  SECTION("too many at once") {
    std::string a = payload(100, 2), b = payload(100, 3), c = payload(100, 4);
    REQUIRE(r.begin(plan_transfer(blake2b_256(a), 100, 1024)).is_ok());
    REQUIRE(r.begin(plan_transfer(blake2b_256(b), 100, 1024)).is_ok());
    CHECK_FALSE(r.begin(plan_transfer(blake2b_256(c), 100, 1024)).is_ok());
  }
  SECTION("over the total in flight") {
    reassembler_options tight = o;
    tight.max_total_bytes = 15000;
    reassembler t(tight);
    REQUIRE(t.begin(plan).is_ok());
    std::string other = payload(10000, 9);
    auto s = t.begin(plan_transfer(blake2b_256(other), other.size(), 1024));
    CHECK_FALSE(s.is_ok());
    CHECK_THAT(s.message(), Catch::Contains("in flight"));
  }
}

TEST_CASE("a stalled transfer expires", "[net][chunker]") {
  std::string data = payload(5000);
  model_put plan = plan_transfer(blake2b_256(data), data.size(), 1024);
  reassembler_options o;
  o.stall_timeout = std::chrono::milliseconds(1000);
  reassembler r(o);
  auto t0 = clk::now();
  REQUIRE(r.begin(plan, t0).is_ok());
  REQUIRE(r.add(chunk_at(plan, data, 0), t0 + std::chrono::milliseconds(900)).has_value());
  CHECK(r.expire(t0 + std::chrono::milliseconds(1500)).empty());  // chunk 0 reset the clock
  auto gone = r.expire(t0 + std::chrono::milliseconds(2000));
  REQUIRE(gone.size() == 1);
  CHECK(gone[0] == plan.model_hash);
  CHECK_FALSE(r.in_progress(plan.model_hash));
  CHECK(r.committed_bytes() == 0);
}

TEST_CASE("an announced transfer holds only the bytes that arrived", "[net][chunker]") {
  // A 1 GiB announcement with three 1 KiB chunks sent: about 3 KiB held, not 1 GiB.
  reassembler_options o;
  o.max_transfer_bytes = uint64_t{1} << 30;
  o.max_total_bytes = uint64_t{1} << 30;
  reassembler r(o);
  std::string chunk = payload(1024, 5);
  model_put big = plan_transfer(blake2b_256("never completes"), uint64_t{1} << 30, 1024);
  REQUIRE(r.begin(big).is_ok());
  CHECK(r.held_bytes() == 0);
  for (uint32_t i : {0u, 1u, 7u}) {
    model_chunk c;
    c.model_hash = big.model_hash;
    c.index = i;
    c.data = chunk;
    REQUIRE(r.add(c).has_value());
  }
  CHECK(r.held_bytes() == 3 * 1024);
  r.drop(big.model_hash);
  CHECK(r.held_bytes() == 0);
}

TEST_CASE("a node-wide budget bounds the bytes all reassemblers hold", "[net][chunker]") {
  auto budget = std::make_shared<byte_budget>(5000);
  reassembler_options o;
  o.budget = budget;
  std::string data = payload(4000, 6);
  model_put plan = plan_transfer(blake2b_256(data), data.size(), 1024);
  {
    reassembler a(o), b(o);
    REQUIRE(a.begin(plan).is_ok());
    REQUIRE(b.begin(plan).is_ok());
    for (uint32_t i = 0; i < 3; ++i) REQUIRE(a.add(chunk_at(plan, data, i)).has_value());
    CHECK(budget->used() == 3072);
    REQUIRE(b.add(chunk_at(plan, data, 0)).has_value());
    auto over = b.add(chunk_at(plan, data, 1));  // 3072 + 1024 + 1024 > 5000
    REQUIRE_FALSE(over.has_value());
    CHECK_THAT(over.error().message(), Catch::Contains("limit 5000"));
    CHECK(budget->used() == 3072);  // b's transfer was dropped and its bytes given back
    auto done = a.add(chunk_at(plan, data, 3));
    REQUIRE(done.has_value());
    REQUIRE(done->has_value());
    CHECK(*(*done)->bytes == data);
    CHECK(budget->used() == 0);     // handed out: no longer the reassembler's
    REQUIRE(a.begin(plan).is_ok());
    REQUIRE(a.add(chunk_at(plan, data, 2)).has_value());
    CHECK(budget->used() == 1024);
  }
  CHECK(budget->used() == 0);       // a destroyed reassembler gives its bytes back
}
