// The node's reachability and relay wiring on 127.0.0.1 (no namespaces): a provider node whose
// peer reports it cannot be dialed back attaches to its --via-relay relay, announces the relayed
// address, answers a client's bid through the circuit, and notices when the relay goes away.
// (tests/nat_relay_test.sh runs the same over real NATs, as root.)
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include <caf/all.hpp>

#include "actors/node.h"
#include "actors/provider.h"
#include "net/inbox.h"
#include "net/relay.h"
#include "net/testing.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using namespace std::chrono_literals;

namespace {

// A peer that answers every dial-back request with "not reachable" (as a peer outside a NAT
// would) and ignores everything else.
struct nat_witness {
  std::unique_ptr<net::transport> t;
  std::string url;
  nat_witness() {
    net::transport_handlers h;
    h.on_message = [](net::inbound_ptr in) {
      if (const auto* d = std::get_if<net::dial_back>(&in->msg()))
        (void)in->from()->send(net::dial_back_result{d->nonce, false, "ws://192.0.2.1:7447", "connecting failed"});
    };
    net::transport_options o;
    o.session_mac = true;
    t = std::move(net::transport::create(net::identity::generate(), o, h)).value();
    REQUIRE(t->listen("127.0.0.1", 0).has_value());
    url = t->url();
  }
  ~nat_witness() { t->stop(); }
};

// A relay that takes attachments (and answers no dial-back requests).
struct bare_relay {
  std::shared_ptr<net::relay_service> service = std::make_shared<net::relay_service>(net::relay_options{});
  std::unique_ptr<net::transport> t;
  std::string url;
  bare_relay() {
    net::transport_options o;
    o.session_mac = true;
    o.relay = service->hooks();
    net::transport_handlers h;
    auto svc = service;
    h.on_message = [svc](net::inbound_ptr in) {
      if (const auto* a = std::get_if<net::relay_attach>(&in->msg()))
        (void)in->from()->send(svc->on_attach(in->from(), *a));
    };
    h.on_close = [svc](const net::connection_ptr& c, const status&) { svc->on_closed(c); };
    t = std::move(net::transport::create(net::identity::generate(), o, h)).value();
    REQUIRE(t->listen("127.0.0.1", 0).has_value());
    url = t->url();
    service->set_public_url(url);
  }
  void stop() {
    service->stop();
    t->stop();
  }
  ~bare_relay() { stop(); }
};

template <typename Pred>
bool eventually(Pred p, std::chrono::milliseconds limit = 5000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (p()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return p();
}

}  // namespace

TEST_CASE("a provider found unreachable serves through its relay and notices the relay go", "[grid][net][relay]") {
  nat_witness witness;
  bare_relay relay;
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  std::string dir = (std::filesystem::temp_directory_path() / ("gg-node-relay-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  auto cache = model_cache::open(dir + "/models", 1 << 20);
  REQUIRE(cache.has_value());
  provider_options po;
  po.device = "cpu";
  po.threads = 1;
  po.max_model_bytes = 1 << 16;
  auto id = net::identity::generate();
  auto core = std::make_shared<provider_core>(keypair_of(id), std::shared_ptr<model_cache>(std::move(cache).value()), po,
                                              nullptr);
  std::mutex mu;
  std::vector<std::string> events;
  node_options no;
  no.listen = "127.0.0.1:0";
  no.provider = core;
  no.bootstrap = {witness.url};
  no.via_relays = {relay.url};
  no.on_event = [&](const std::string& e) {
    std::lock_guard<std::mutex> lk(mu);
    events.push_back(e);
  };
  auto started = grid_node::start(sys, id, no);
  REQUIRE(started.has_value());
  auto node = std::move(started).value();
  auto seen = [&](const std::string& what) {
    std::lock_guard<std::mutex> lk(mu);
    for (const auto& e : events)
      if (e.find(what) != std::string::npos) return true;
    return false;
  };

  // The witness says it cannot be dialed back (the bare relay answers no dial-back request).
  REQUIRE(eventually([&] { return node->reachability() == "behind_nat"; }));
  std::string relayed = net::relayed_url(relay.url, id.node_id());
  REQUIRE(eventually([&] { return node->announced_url() == relayed; }));
  // The DHT files its records under the relayed address too (it listens where nobody can dial).
  REQUIRE(eventually([&] { return node->dht_address() == relayed; }));
  CHECK(seen("\"event\":\"behind_nat\""));
  CHECK(relay.service->counters().attached == 1);

  // A client reaches it at the relayed address: the provider itself answers, end to end.
  net::inbox box;
  net::transport_options co;
  co.session_mac = true;
  auto client = std::move(net::transport::create(net::identity::generate(), co, box.handlers())).value();
  auto c = client->connect_sync(relayed);
  REQUIRE(c.has_value());
  CHECK((*c)->peer_key() == id.public_key());
  CHECK((*c)->peer_hello().listen_url == relayed);  // its Hello announces the relayed address
  net::bid_request br = std::get<net::bid_request>(net::testing::sample_messages()[6]);
  REQUIRE((*c)->send(br) == net::send_result::queued);
  bool answered = false;
  for (int i = 0; i < 20 && !answered; ++i) {
    auto m = box.next_message(1000ms);
    if (!m) break;
    answered = std::holds_alternative<net::bid>(m->msg()) || std::holds_alternative<net::bid_decline>(m->msg());
  }
  CHECK(answered);
  client->stop();

  // The relay goes away: the provider says so and announces no address it cannot be reached at.
  relay.stop();
  CHECK(eventually([&] { return seen("\"event\":\"relay_down\""); }));
  CHECK(eventually([&] { return node->announced_url().empty(); }));
  node->stop();
  std::filesystem::remove_all(dir);
}
