#include "serve/access.h"

#include <catch2/catch.hpp>

using namespace gpugrid;
using namespace gpugrid::serve;

TEST_CASE("access: key files and bearer matching", "[serve]") {
  auto keys = parse_key_file("# comment\n\n  key-aaaaaaaaaaaaaaaa  \nkey-bbbbbbbbbbbbbbbb\r\n", "keys.txt");
  REQUIRE(keys.has_value());
  REQUIRE(keys->size() == 2);
  key_ring ring(*keys);
  CHECK(ring.match("Bearer key-aaaaaaaaaaaaaaaa") == 0);
  CHECK(ring.match("bearer key-bbbbbbbbbbbbbbbb") == 1);
  CHECK(ring.match("Bearer key-cccccccccccccccc") == -1);
  CHECK(ring.match("key-aaaaaaaaaaaaaaaa") == -1);
  CHECK(ring.match("") == -1);
  auto bad = parse_key_file("ok-key-0123456789abcdef\nshort\n", "keys.txt");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message().find("keys.txt:2") != std::string::npos);
}

TEST_CASE("access: token bucket per client", "[serve]") {
  rate_limiter rl(2.0, 3.0);
  auto t = std::chrono::steady_clock::now();
  double retry = 0;
  CHECK(rl.take(0, t, &retry));
  CHECK(rl.take(0, t, &retry));
  CHECK(rl.take(0, t, &retry));
  CHECK_FALSE(rl.take(0, t, &retry));
  CHECK(retry == Approx(0.5));
  CHECK(rl.take(1, t, &retry));  // another key has its own bucket
  CHECK(rl.take(0, t + std::chrono::milliseconds(600), &retry));
  CHECK_FALSE(rl.take(0, t + std::chrono::milliseconds(600), &retry));
  rate_limiter none(0, 0);
  for (int i = 0; i < 100; ++i) CHECK(none.take(0, t, &retry));
}

TEST_CASE("access: loopback hosts", "[serve]") {
  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("localhost"));
  CHECK(is_loopback_host("[::1]"));
  CHECK_FALSE(is_loopback_host("0.0.0.0"));
  CHECK_FALSE(is_loopback_host("192.168.1.2"));
  CHECK_FALSE(is_loopback_host(""));
}
