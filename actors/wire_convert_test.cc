#include <catch2/catch.hpp>

#include "actors/wire_convert.h"
#include "net/codec.h"
#include "net/identity.h"

using namespace gpugrid;
using namespace gpugrid::grid;

TEST_CASE("a bid crosses the wire and back as the same bid_reply, and its signature holds", "[grid][client]") {
  net::identity provider = net::identity::generate();
  bid_reply r;
  r.job = new_job_id();
  r.provider = provider.public_key();
  r.accepted = true;
  r.price = 0.0125;
  r.eta_ms = 42;
  r.model_cached = true;
  r.valid_ms = 60000;
  r.capacity = 17;
  net::bid b = to_wire_bid(r);
  net::sign_bid(b, provider);
  bid_reply back = from_wire_bid(b, provider.public_key());
  CHECK(back.accepted);
  CHECK(back.job == r.job);
  CHECK(back.price == r.price);
  CHECK(back.eta_ms == r.eta_ms);
  CHECK(back.model_cached);
  CHECK(back.valid_ms == r.valid_ms);
  CHECK(back.capacity == 17);
  REQUIRE(back.signature);
  CHECK(bid_signature_ok(back));
  bid_reply cheaper = back;  // a changed price no longer carries the provider's signature
  cheaper.price = 0.001;
  CHECK_FALSE(bid_signature_ok(cheaper));
  bid_reply other = back;    // nor does another provider's key
  other.provider = net::identity::generate().public_key();
  CHECK_FALSE(bid_signature_ok(other));
  bid_reply local = r;       // an in-process provider's bid carries none
  CHECK(bid_signature_ok(local));
}

TEST_CASE("a decline crosses the wire with its reason and detail", "[grid][client]") {
  bid_reply r;
  r.job = new_job_id();
  r.reason = decline_reason::too_cheap;
  r.detail = "price 2 is above the limit 1";
  key32 who{};
  who[0] = 9;
  bid_reply back = from_wire_decline(to_wire_decline(r), who);
  CHECK_FALSE(back.accepted);
  CHECK(back.job == r.job);
  CHECK(back.provider == who);
  CHECK(back.reason == decline_reason::too_cheap);
  CHECK(back.detail == r.detail);
}

TEST_CASE("a bid request from the wire takes its client from the connection", "[grid][client]") {
  bid_request q;
  q.job = new_job_id();
  q.model_hash[3] = 7;
  q.model_bytes = 1234;
  q.gflops = 2.5;
  q.input_bytes = 48;
  q.max_price = 0.5;
  key32 client{};
  client[1] = 5;
  bid_request back = from_wire_bid_request(to_wire_bid_request(q), client);
  CHECK(back.job == q.job);
  CHECK(back.client == client);
  CHECK(back.model_hash == q.model_hash);
  CHECK(back.model_bytes == 1234);
  CHECK(back.gflops == 2.5);
  CHECK(back.input_bytes == 48);
  CHECK(back.max_price == 0.5);
}
