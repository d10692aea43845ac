// The handshake as plain logic: two sides exchange Hellos and HelloAcks through the codec.
#include "net/handshake.h"

#include <catch2/catch.hpp>

#include "net/codec.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

// Encodes `m` as `from` would send it and decodes it as the receiver would.
decoded_frame wire(const message& m, const identity& from, uint64_t seq, std::optional<bytes16> channel) {
  frame_header h;
  h.sequence = seq;
  h.channel = channel;
  auto f = encode(m, from, h);
  REQUIRE(f.has_value());
  auto d = decode(f->data(), f->size());
  REQUIRE(d.has_value());
  return std::move(d).value();
}

struct pair_result {
  status a_status, b_status;
};

}  // namespace

TEST_CASE("two sides complete a handshake and agree on keys", "[net][handshake]") {
  identity ia = identity::generate(), ib = identity::generate();
  for (bool mac : {false, true}) {
    handshake_options o;
    o.session_mac = mac;
    hello desc;
    desc.listen_url = "ws://127.0.0.1:1";
    handshake a(ia, true, desc, o), b(ib, false, hello{}, o);
    CHECK(a.local_hello().node_key == ia.public_key());
    CHECK(a.local_hello().listen_url == "ws://127.0.0.1:1");
    CHECK(a.local_hello().challenge != b.local_hello().challenge);
    CHECK(a.local_hello().ephemeral_key.has_value() == mac);

    goodbye_reason why;
    auto ack_b = b.on_hello(wire(a.local_hello(), ia, 0, std::nullopt), &why);
    REQUIRE(ack_b.has_value());
    auto ack_a = a.on_hello(wire(b.local_hello(), ib, 0, std::nullopt), &why);
    REQUIRE(ack_a.has_value());
    CHECK(a.on_hello_ack(wire(*ack_b, ib, 1, a.rx_channel()), &why).is_ok());
    CHECK(b.on_hello_ack(wire(*ack_a, ia, 1, b.rx_channel()), &why).is_ok());
    CHECK(a.established());
    CHECK(b.established());
    CHECK(a.peer_key() == ib.public_key());
    CHECK(b.peer_key() == ia.public_key());
    CHECK(a.peer_hello().listen_url.empty());
    CHECK(b.peer_hello().listen_url == "ws://127.0.0.1:1");
    CHECK(a.version() == kProtocolVersion);
    CHECK(a.tx_channel() == b.rx_channel());
    REQUIRE(a.tx_key().has_value() == mac);
    if (mac) {
      CHECK(a.tx_key()->bytes == b.rx_key()->bytes);
      CHECK(a.rx_key()->bytes == b.tx_key()->bytes);
      CHECK(a.tx_key()->bytes != a.rx_key()->bytes);
    }
  }
}

TEST_CASE("handshake failures name the problem", "[net][handshake]") {
  identity ia = identity::generate(), ib = identity::generate(), mallory = identity::generate();
  goodbye_reason why;

  SECTION("no common version") {
    handshake_options old_o, new_o;
    old_o.newest_version = 1;
    old_o.oldest_version = 1;
    new_o.newest_version = 3;
    new_o.oldest_version = 2;
    handshake a(ia, true, hello{}, old_o), b(ib, false, hello{}, new_o);
    auto r = b.on_hello(wire(a.local_hello(), ia, 0, std::nullopt), &why);
    REQUIRE_FALSE(r.has_value());
    CHECK(why == goodbye_reason::version_mismatch);
    CHECK_THAT(r.error().message(), Catch::Contains("protocol version mismatch") &&
                                        Catch::Contains("this node speaks versions 2..3, the peer speaks 1..1"));
    auto r2 = a.on_hello(wire(b.local_hello(), ib, 0, std::nullopt), &why);
    REQUIRE_FALSE(r2.has_value());
    CHECK_THAT(r2.error().message(), Catch::Contains("this node speaks versions 1..1, the peer speaks 2..3"));
  }
  SECTION("overlapping versions settle on the lower newest") {
    handshake_options o1, o2;
    o1.newest_version = 3;
    o1.oldest_version = 1;
    o2.newest_version = 5;
    o2.oldest_version = 2;
    handshake a(ia, true, hello{}, o1), b(ib, false, hello{}, o2);
    REQUIRE(b.on_hello(wire(a.local_hello(), ia, 0, std::nullopt), &why).has_value());
    CHECK(b.version() == 3);
  }
  SECTION("a Hello claiming someone else's key") {
    handshake a(ia, true, hello{}, {}), b(ib, false, hello{}, {});
    auto r = b.on_hello(wire(a.local_hello(), mallory, 0, std::nullopt), &why);
    REQUIRE_FALSE(r.has_value());
    CHECK(why == goodbye_reason::auth_failed);
  }
  SECTION("the wrong peer") {
    handshake_options o;
    o.expected_peer = mallory.public_key();
    handshake a(ia, true, hello{}, o), b(ib, false, hello{}, {});
    auto r = a.on_hello(wire(b.local_hello(), ib, 0, std::nullopt), &why);
    REQUIRE_FALSE(r.has_value());
    CHECK(why == goodbye_reason::auth_failed);
    CHECK_THAT(r.error().message(), Catch::Contains("not the expected"));
  }
  SECTION("an ack that proves nothing") {
    handshake a(ia, true, hello{}, {}), b(ib, false, hello{}, {});
    REQUIRE(a.on_hello(wire(b.local_hello(), ib, 0, std::nullopt), &why).has_value());
    // A signature over another connection's challenge (replayed from elsewhere).
    handshake other(ia, true, hello{}, {});
    handshake b2(ib, false, hello{}, {});
    auto stale = b2.on_hello(wire(other.local_hello(), ia, 0, std::nullopt), &why);
    REQUIRE(stale.has_value());
    status s = a.on_hello_ack(wire(*stale, ib, 1, a.rx_channel()), &why);
    CHECK_FALSE(s.is_ok());
    CHECK(why == goodbye_reason::auth_failed);
    CHECK_FALSE(a.established());
  }
  SECTION("talking to itself") {
    handshake a(ia, true, hello{}, {}), a2(ia, false, hello{}, {});
    auto r = a.on_hello(wire(a2.local_hello(), ia, 0, std::nullopt), &why);
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error().message(), Catch::Contains("itself"));
  }
  SECTION("out of order") {
    handshake a(ia, true, hello{}, {});
    status s = a.on_hello_ack(wire(hello_ack{}, ib, 1, a.rx_channel()), &why);
    CHECK_FALSE(s.is_ok());
    auto r = a.on_hello(wire(ping{1}, ib, 0, std::nullopt), &why);
    CHECK_FALSE(r.has_value());
  }
}
