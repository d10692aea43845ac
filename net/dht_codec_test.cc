// The DHT's messages on the wire: round trips, signatures that survive them, and the bounds
// the decoder enforces.
#include <catch2/catch.hpp>
#include <sodium.h>

#include "discovery/simulator.h"
#include "net/codec.h"
#include "net/testing.h"

using namespace gpugrid;
using namespace gpugrid::net;

namespace {

const identity& signer() {
  static const identity id = identity::from_seed(testing::pattern<32>(5));
  return id;
}

discovery::provider_record record_of(const identity& id) {
  discovery::provider_record r;
  r.key = discovery::model_key(testing::pattern<32>(9));
  r.provider = id.public_key();
  r.addresses = {"ws://198.51.100.7:7447", "wss://p.example:7447"};
  r.device_class = "cuda-sm90-80g";
  r.price = 0.0025;
  r.issued_ms = 1'800'000'000'000;
  r.expires_ms = r.issued_ms + 900'000;
  discovery::sign_record(r, id.secret_key());
  return r;
}

template <typename T>
T round_trip(const T& m) {
  frame_header h;
  h.sequence = 7;
  h.channel = testing::pattern<16>(3);
  auto f = encode(message(m), signer(), h);
  REQUIRE(f.has_value());
  auto d = decode(f->view());
  INFO((d.has_value() ? std::string() : d.error().message()));
  REQUIRE(d.has_value());
  REQUIRE(std::holds_alternative<T>(d->msg));
  return std::get<T>(d->msg);
}

}  // namespace

TEST_CASE("DHT queries and replies round-trip and their records still verify", "[discovery][codec]") {
  REQUIRE(sodium_init() >= 0);
  dht_query q;
  q.request_id = 0x1234567890ull;
  q.kind = discovery::query_kind::add_provider;
  q.target = discovery::model_key(testing::pattern<32>(9));
  q.sender_address = "ws://198.51.100.7:7447";
  q.device_class = "cpu";
  q.max_price = 0.5;
  q.limit = 20;
  q.records = {record_of(signer())};
  const dht_query q2 = round_trip(q);
  CHECK(q2.request_id == q.request_id);
  CHECK(q2.kind == q.kind);
  CHECK(q2.target == q.target);
  CHECK(q2.sender_address == q.sender_address);
  CHECK(q2.device_class == "cpu");
  CHECK(q2.max_price == 0.5);
  CHECK(q2.limit == 20);
  REQUIRE(q2.records.size() == 1);
  CHECK(q2.records[0].addresses == q.records[0].addresses);
  CHECK(q2.records[0].price == q.records[0].price);
  CHECK(discovery::verify_record(q2.records[0]));

  dht_query plain;
  plain.kind = discovery::query_kind::find_node;
  CHECK(round_trip(plain).max_price == -1);

  dht_reply r;
  r.request_id = 9;
  for (int i = 0; i < 20; ++i) r.nodes.push_back({testing::pattern<32>(static_cast<uint8_t>(i)), "ws://10.0.0.1:7447"});
  r.records = {record_of(signer()), record_of(signer())};
  r.stored = 2;
  const dht_reply r2 = round_trip(r);
  CHECK(r2.nodes.size() == 20);
  CHECK(r2.nodes[3].id == r.nodes[3].id);
  CHECK(r2.nodes[3].address == r.nodes[3].address);
  CHECK(r2.records.size() == 2);
  CHECK(r2.stored == 2);
  CHECK(discovery::verify_record(r2.records[1]));

  // The simulator's size estimate tracks the real frames (signed envelopes carry 48 bytes more
  // than MAC'd ones).
  auto fq = encode(message(q), signer(), 1);
  auto fr = encode(message(r), signer(), 1);
  REQUIRE(fq.has_value());
  REQUIRE(fr.has_value());
  const double eq = static_cast<double>(discovery::estimate_wire_bytes(q)), er = static_cast<double>(discovery::estimate_wire_bytes(r));
  CHECK(std::abs(eq - static_cast<double>(fq->size())) < 0.25 * static_cast<double>(fq->size()));
  CHECK(std::abs(er - static_cast<double>(fr->size())) < 0.25 * static_cast<double>(fr->size()));
}

TEST_CASE("DHT messages over their bounds are refused by the decoder", "[discovery][codec]") {
  REQUIRE(sodium_init() >= 0);
  auto refused = [](const message& m, const char* what) {
    auto f = encode(m, signer(), 1);
    REQUIRE(f.has_value());
    frame_error why = frame_error::none;
    auto d = decode(f->view(), {}, &why);
    REQUIRE_FALSE(d.has_value());
    CHECK(why == frame_error::bad_message);
    CHECK(d.error().message().find(what) != std::string::npos);
  };
  dht_reply many_nodes;
  many_nodes.nodes.assign(discovery::kMaxNodesPerReply + 1, {testing::pattern<32>(1), "ws://x:1"});
  refused(many_nodes, "nodes");
  dht_query many_records;
  many_records.kind = discovery::query_kind::add_provider;
  many_records.records.assign(discovery::kMaxRecordsPerMessage + 1, record_of(signer()));
  refused(many_records, "records");
  dht_query find_with_records;
  find_with_records.kind = discovery::query_kind::find_node;
  find_with_records.records = {record_of(signer())};
  refused(find_with_records, "carrying records");
  dht_reply long_address;
  long_address.nodes = {{testing::pattern<32>(1), std::string(discovery::kMaxAddressBytes + 1, 'a')}};
  refused(long_address, "address");
  dht_reply bad_record;
  bad_record.records = {record_of(signer())};
  bad_record.records[0].expires_ms = bad_record.records[0].issued_ms + discovery::kMaxRecordTtlMs + 1;
  refused(bad_record, "lifetime");
  dht_query nan_price;
  nan_price.kind = discovery::query_kind::find_providers;
  nan_price.max_price = std::nan("");
  refused(nan_price, "price");
}
