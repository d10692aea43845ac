// Relay circuits: relay_core's bookkeeping transition by transition (attach, admit, request,
// accept, close, expire, caps, pacing), then whole circuits over real transports on 127.0.0.1:
// the handshake and MACs run end to end through the relay; a tampering relay, a relay asked
// for an unattached node and a flood of circuits from one address are each refused or detected.
#include "net/relay.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "net/inbox.h"
#include "net/testing.h"

using namespace gpugrid;
using namespace gpugrid::net;
using namespace std::chrono_literals;

namespace {

const std::string kNode = "gg" + std::string(32, 'a');
const std::string kOther = "gg" + std::string(32, 'b');

relay_options small_caps() {
  relay_options o;
  o.max_circuits = 4;
  o.max_circuits_per_source = 2;
  o.max_attached = 2;
  o.accept_timeout_ms = 1000;
  return o;
}

}  // namespace

TEST_CASE("relay paths: relayed addresses and accept tokens", "[net][relay]") {
  CHECK(relayed_node_id("/relay/" + kNode) == kNode);
  CHECK(relayed_node_id("/relay/accept/00") == "");
  CHECK(relayed_node_id("/relay/" + kNode + "/x") == "");
  CHECK(relayed_node_id("/relay/ggUPPER") == "");
  CHECK(relayed_node_id("/metrics") == "");
  CHECK(relayed_url("ws://1.2.3.4:7447/", kNode) == "ws://1.2.3.4:7447/relay/" + kNode);
  bytes16 t = testing::pattern<16>(5);
  auto back = parse_accept_path(accept_path(t));
  REQUIRE(back.has_value());
  CHECK(*back == t);
  CHECK_FALSE(parse_accept_path("/relay/accept/zz").has_value());
  CHECK_FALSE(parse_accept_path("/relay/accept/" + std::string(32, 'g')).has_value());
  CHECK_FALSE(parse_accept_path("/relay/" + kNode).has_value());
}

TEST_CASE("relay_core: a circuit goes request -> accept -> close", "[net][relay]") {
  relay_core r(small_caps());
  REQUIRE(r.attach(kNode, 7).is_ok());
  CHECK(r.attached_conn(kNode) == std::optional<uint64_t>(7));
  REQUIRE(r.admit(kNode, "10.0.0.1", 0).is_ok());
  auto q = r.request(kNode, "10.0.0.1", 0);
  REQUIRE(q.has_value());
  CHECK(q->provider_conn == 7);
  CHECK(r.counters().pending == 1);
  CHECK(r.pending_token(q->token, 10));
  auto id = r.accept(q->token, 10);
  REQUIRE(id.has_value());
  CHECK(*id == q->circuit);
  CHECK(r.counters().open == 1);
  CHECK(r.counters().pending == 0);
  // A token is good once: a replayed accept finds nothing.
  CHECK_FALSE(r.accept(q->token, 11).has_value());
  CHECK(r.counters().bad_accept == 1);
  r.close(*id);
  CHECK(r.counters().open == 0);
  r.close(*id);  // idempotent
}

TEST_CASE("relay_core: circuits to a node that is not attached are refused", "[net][relay]") {
  std::vector<std::string> logged;
  relay_options o = small_caps();
  o.log = [&](const std::string& l) { logged.push_back(l); };
  relay_core r(o);
  REQUIRE(r.attach(kNode, 7).is_ok());
  status s = r.admit(kOther, "10.0.0.1", 0);
  CHECK(s.kind() == error_kind::invalid_input);
  CHECK(s.message().find("not attached") != std::string::npos);
  CHECK_FALSE(r.request(kOther, "10.0.0.1", 0).has_value());
  CHECK(r.counters().refused_unattached == 2);
  // Detaching (the provider's connection closed) ends its attachment.
  r.detach(7);
  CHECK_FALSE(r.admit(kNode, "10.0.0.1", 0).is_ok());
  CHECK_FALSE(logged.empty());
}

TEST_CASE("relay_core: per-source and total caps, and a flood logs little", "[net][relay]") {
  std::vector<std::string> logged;
  relay_options o = small_caps();
  o.log = [&](const std::string& l) { logged.push_back(l); };
  relay_core r(o);
  REQUIRE(r.attach(kNode, 7).is_ok());
  REQUIRE(r.request(kNode, "10.0.0.1", 0).has_value());
  REQUIRE(r.request(kNode, "10.0.0.1", 0).has_value());
  // One address asks for thousands: all refused at its cap of 2, logged a dozen times at most.
  for (int i = 0; i < 5000; ++i) REQUIRE_FALSE(r.request(kNode, "10.0.0.1", 0).has_value());
  CHECK(r.counters().refused_source == 5000);
  CHECK(logged.size() <= 14);
  // Others are not affected by that flood.
  REQUIRE(r.request(kNode, "10.0.0.2", 0).has_value());
  REQUIRE(r.request(kNode, "10.0.0.3", 0).has_value());
  // ... until the relay's total cap (4).
  status s = r.admit(kNode, "10.0.0.4", 0);
  CHECK(s.kind() == error_kind::io);
  CHECK(r.counters().refused_total == 1);
}

TEST_CASE("relay_core: a provider that never dials back frees the slot", "[net][relay]") {
  relay_core r(small_caps());
  REQUIRE(r.attach(kNode, 7).is_ok());
  auto a = r.request(kNode, "10.0.0.1", 0);
  auto b = r.request(kNode, "10.0.0.1", 0);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  REQUIRE(r.accept(b->token, 500).has_value());
  CHECK_FALSE(r.admit(kNode, "10.0.0.1", 500).is_ok());  // at the per-source cap
  auto gone = r.expire(1500);
  REQUIRE(gone.size() == 1);  // only the pending one; the open circuit stays
  CHECK(gone[0] == a->circuit);
  CHECK_FALSE(r.pending_token(a->token, 1500));
  CHECK_FALSE(r.accept(a->token, 1500).has_value());
  CHECK(r.counters().expired == 1);
  CHECK(r.admit(kNode, "10.0.0.1", 1500).is_ok());
}

TEST_CASE("relay_core: attach cap, and a newer attach replaces the old connection", "[net][relay]") {
  relay_core r(small_caps());
  REQUIRE(r.attach(kNode, 1).is_ok());
  REQUIRE(r.attach(kOther, 2).is_ok());
  CHECK(r.attach("gg" + std::string(32, 'c'), 3).kind() == error_kind::io);
  REQUIRE(r.attach(kNode, 4).is_ok());
  CHECK(r.attached_conn(kNode) == std::optional<uint64_t>(4));
  r.detach(1);  // the old connection closing does not detach the new one
  CHECK(r.attached_conn(kNode) == std::optional<uint64_t>(4));
}

TEST_CASE("relay_core: bandwidth pacing holds the rate over time", "[net][relay]") {
  relay_options o;
  o.max_bytes_per_second = 1e6;
  relay_core r(o);
  int64_t now = 0;
  int64_t sent = 0;
  // A sender that waits as told: 10 MB in 64 KiB messages takes about 10 s of simulated time.
  while (sent < 10'000'000) {
    int64_t wait = r.pace(65536, now);
    sent += 65536;
    now += wait;
  }
  CHECK(now >= 9500);
  CHECK(now <= 10500);
  relay_core unlimited(relay_options{});
  CHECK(unlimited.pace(1 << 20, 0) == 0);
}

// ------------------------------------------------------------------ over real transports

namespace {

transport_options fast() {
  transport_options o;
  o.connect_timeout = 1000ms;
  o.handshake_timeout = 1500ms;
  o.idle_timeout = 5000ms;
  o.session_mac = true;
  o.max_frame_bytes = 1 << 20;
  return o;
}

// A relay node: a transport serving circuits and answering RelayAttach.
struct relay_node {
  identity id = identity::generate();
  std::shared_ptr<relay_service> service;
  std::unique_ptr<transport> t;
  std::string url;

  explicit relay_node(relay_options ro) {
    service = std::make_shared<relay_service>(ro);
    transport_options o = fast();
    o.relay = service->hooks();
    transport_handlers h;
    auto svc = service;
    h.on_message = [svc](inbound_ptr in) {
      if (const auto* a = std::get_if<relay_attach>(&in->msg())) (void)in->from()->send(svc->on_attach(in->from(), *a));
    };
    h.on_close = [svc](const connection_ptr& c, const status&) { svc->on_closed(c); };
    t = std::move(transport::create(id, o, h)).value();
    REQUIRE(t->listen("127.0.0.1", 0).has_value());
    url = t->url();
    service->set_public_url(url);
  }
  ~relay_node() {
    service->stop();
    t->stop();
  }
};

// A provider that cannot be dialed: it attaches to a relay and answers circuits through it.
// Every message it receives on a circuit lands in `in`.
struct hidden_provider {
  identity id = identity::generate();
  inbox in;
  std::unique_ptr<transport> t;
  connection_ptr attach;
  std::string relay_url;

  explicit hidden_provider(const std::string& relay) : relay_url(relay) {
    transport_handlers h = in.handlers();
    auto queue = h.on_message;
    h.on_message = [this, queue](inbound_ptr m) {
      if (const auto* inc = std::get_if<relay_incoming>(&m->msg())) {
        auto u = parse_ws_url(relay_url);
        u->path = accept_path(inc->token);
        t->answer_circuit(u->str(), [](expected<connection_ptr>) {});
        return;
      }
      queue(std::move(m));
    };
    t = std::move(transport::create(id, fast(), h)).value();
    auto c = t->connect_sync(relay);
    REQUIRE(c.has_value());
    attach = *c;
    REQUIRE(attach->send(relay_attach{true}) == send_result::queued);
    auto ack = in.next_message(2000ms);
    REQUIRE(ack);
    const auto* a = std::get_if<relay_attach_ack>(&ack->msg());
    REQUIRE(a);
    REQUIRE(a->accepted);
    CHECK(a->relayed_url == relayed_url(relay, id.node_id()));
  }
  ~hidden_provider() { t->stop(); }
};

}  // namespace

TEST_CASE("relay circuit: handshake and MACs end to end, frames in order both ways", "[net][relay][transport]") {
  relay_node relay(relay_options{});
  hidden_provider p(relay.url);
  identity client_id = identity::generate();
  inbox client_in;
  auto client = std::move(transport::create(client_id, fast(), client_in.handlers())).value();
  auto c = client->connect_sync(relayed_url(relay.url, p.id.node_id()));
  REQUIRE(c.has_value());
  CHECK((*c)->peer_key() == p.id.public_key());  // the provider itself, not the relay
  CHECK((*c)->session_mac());
  for (uint64_t i = 0; i < 50; ++i) REQUIRE((*c)->send(ping{i}) == send_result::queued);
  peer_exchange px;
  px.want_reply = true;
  REQUIRE((*c)->send(px) == send_result::queued);
  // The provider sees the client's own key on an inbound connection, and the message.
  inbound_ptr got;
  for (int i = 0; i < 20 && !got; ++i) {
    auto m = p.in.next_message(2000ms);
    REQUIRE(m);
    if (std::holds_alternative<peer_exchange>(m->msg())) got = m;
  }
  REQUIRE(got);
  CHECK(got->from()->peer_key() == client_id.public_key());
  CHECK(got->from()->inbound());
  // And the other way.
  REQUIRE(got->from()->send(cancel{testing::pattern<16>(1), "back"}) == send_result::queued);
  auto back = client_in.next_message(2000ms);
  REQUIRE(back);
  CHECK(std::get<cancel>(back->msg()).reason == "back");
  CHECK(relay.service->counters().open == 1);
  CHECK(relay.service->counters().bytes > 0);
  (*c)->close();
  for (int i = 0; i < 100 && relay.service->counters().open > 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(relay.service->counters().open == 0);
  client->stop();
}

TEST_CASE("relay circuit: a tampering relay is detected end to end", "[net][relay][transport]") {
  relay_options ro;
  std::atomic<int> seen{0};
  ro.tamper = [&](std::string data, bool upstream) {
    // Past the Hello and HelloAck, flip one byte of each client frame.
    if (upstream && ++seen > 2 && !data.empty()) data[data.size() / 2] ^= 0x20;
    return std::vector<std::string>{std::move(data)};
  };
  relay_node relay(ro);
  hidden_provider p(relay.url);
  inbox client_in;
  auto client = std::move(transport::create(identity::generate(), fast(), client_in.handlers())).value();
  auto c = client->connect_sync(relayed_url(relay.url, p.id.node_id()));
  REQUIRE(c.has_value());
  REQUIRE((*c)->send(cancel{testing::pattern<16>(1), "x"}) == send_result::queued);
  // The provider refuses the altered frame (bad MAC) and closes; nothing altered is delivered.
  for (int i = 0; i < 100 && p.t->metrics().bad_signatures == 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(p.t->metrics().bad_signatures >= 1);
  for (int i = 0; i < 100 && (*c)->is_open(); ++i) std::this_thread::sleep_for(20ms);
  CHECK_FALSE((*c)->is_open());
  for (;;) {
    auto m = p.in.next_message(200ms);
    if (!m) break;
    CHECK_FALSE(std::holds_alternative<cancel>(m->msg()));
  }
  client->stop();
}

TEST_CASE("relay circuit: a node that is not attached is refused at once, with a reason", "[net][relay][transport]") {
  relay_node relay(relay_options{});
  auto client = std::move(transport::create(identity::generate(), fast(), transport_handlers{})).value();
  // Nobody attached under this id: the relay refuses with a reason, fast.
  auto start = std::chrono::steady_clock::now();
  auto c = client->connect_sync(relayed_url(relay.url, kNode));
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().message().find("not attached") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 1500ms);
  // Once the provider is attached, the same kind of address works.
  hidden_provider p(relay.url);
  auto c2 = client->connect_sync(relayed_url(relay.url, p.id.node_id()));
  REQUIRE(c2.has_value());
  CHECK((*c2)->peer_key() == p.id.public_key());
  // A node that is no relay refuses /relay/ addresses (HTTP 404 with a reason).
  auto plain = std::move(transport::create(identity::generate(), fast(), transport_handlers{})).value();
  REQUIRE(plain->listen("127.0.0.1", 0).has_value());
  auto c3 = client->connect_sync(plain->url() + "/relay/" + kNode);
  REQUIRE_FALSE(c3.has_value());
  CHECK(c3.error().message().find("no relay") != std::string::npos);
  client->stop();
  plain->stop();
}

TEST_CASE("relay circuit: one address flooding circuits leaves others unaffected", "[net][relay][transport]") {
  relay_options ro;
  ro.max_circuits_per_source = 3;
  ro.max_circuits = 64;
  relay_node relay(ro);
  hidden_provider p(relay.url);
  auto flooder = std::move(transport::create(identity::generate(), fast(), transport_handlers{})).value();
  std::vector<connection_ptr> held;
  int refused = 0;
  for (int i = 0; i < 12; ++i) {
    auto c = flooder->connect_sync(relayed_url(relay.url, p.id.node_id()));
    if (c) held.push_back(*c);
    else ++refused;
  }
  CHECK(held.size() == 3);
  CHECK(refused == 9);
  CHECK(relay.service->counters().refused_source >= 9);
  // Everyone on 127.0.0.1 shares the address here, so "another user" is a circuit already open:
  // it still carries traffic.
  REQUIRE(held[0]->send(peer_exchange{}) == send_result::queued);
  bool delivered = false;
  for (int i = 0; i < 20 && !delivered; ++i) {
    auto m = p.in.next_message(1000ms);
    if (!m) break;
    delivered = std::holds_alternative<peer_exchange>(m->msg());
  }
  CHECK(delivered);
  flooder->stop();
}

namespace {

// A relay whose client -> provider direction misbehaves from the 4th message on (the Hello,
// HelloAck and one more pass): the provider must refuse the circuit and deliver nothing out of
// order. `how` turns each later message into what the relay passes on.
void misbehaving_relay(const std::function<std::vector<std::string>(std::string, int)>& how, int64_t relay_metric_replays_min) {
  relay_options ro;
  std::atomic<int> n{0};
  ro.tamper = [&](std::string data, bool upstream) {
    if (!upstream) return std::vector<std::string>{std::move(data)};
    int k = ++n;
    if (k <= 3) return std::vector<std::string>{std::move(data)};
    return how(std::move(data), k);
  };
  relay_node relay(ro);
  hidden_provider p(relay.url);
  inbox client_in;
  auto client = std::move(transport::create(identity::generate(), fast(), client_in.handlers())).value();
  auto c = client->connect_sync(relayed_url(relay.url, p.id.node_id()));
  REQUIRE(c.has_value());
  for (uint64_t i = 0; i < 8; ++i) (void)(*c)->send(cancel{testing::pattern<16>(static_cast<uint8_t>(i)), std::to_string(i)});
  // What is delivered comes in order, with no gap and no repeat, until the provider refuses.
  int expect = 0;
  for (int i = 0; i < 150 && (*c)->is_open(); ++i) {
    auto m = p.in.next_message(20ms);
    if (!m) continue;
    if (const auto* x = std::get_if<cancel>(&m->msg())) CHECK(x->reason == std::to_string(expect++));
  }
  CHECK_FALSE((*c)->is_open());
  CHECK(p.t->metrics().replays >= relay_metric_replays_min);
  CHECK(expect < 8);
  client->stop();
}

}  // namespace

TEST_CASE("relay circuit: a relay that drops a frame is caught by the sequence numbers", "[net][relay][transport]") {
  misbehaving_relay([](std::string d, int k) { return k == 5 ? std::vector<std::string>{} : std::vector<std::string>{std::move(d)}; }, 1);
}

TEST_CASE("relay circuit: a relay that reorders frames is caught", "[net][relay][transport]") {
  std::string held;
  misbehaving_relay(
      [&held](std::string d, int k) {
        if (k == 5) {
          held = std::move(d);
          return std::vector<std::string>{};
        }
        if (k == 6) return std::vector<std::string>{std::move(d), held};
        return std::vector<std::string>{std::move(d)};
      },
      1);
}

TEST_CASE("relay circuit: a relay that floods replays is caught, and the relay itself stays well", "[net][relay][transport]") {
  misbehaving_relay([](std::string d, int) { return std::vector<std::string>(50, d); }, 1);
}

TEST_CASE("relay circuit: a slow relay (bandwidth budget) delays but delivers everything in order", "[net][relay][transport]") {
  relay_options ro;
  ro.max_bytes_per_second = 400'000;  // the first 64 KiB pass at once, the rest at 400 kB/s
  relay_node relay(ro);
  hidden_provider p(relay.url);
  inbox client_in;
  auto client = std::move(transport::create(identity::generate(), fast(), client_in.handlers())).value();
  auto c = client->connect_sync(relayed_url(relay.url, p.id.node_id()));
  REQUIRE(c.has_value());
  auto start = std::chrono::steady_clock::now();
  const int n = 20;
  for (int i = 0; i < n; ++i) {
    net::model_chunk ch;
    ch.index = static_cast<uint32_t>(i);
    ch.data = std::string(20000, static_cast<char>('a' + i));
    while ((*c)->send(ch) == send_result::queue_full) (*c)->wait_writable(100ms);
  }
  int got = 0;
  while (got < n) {
    auto m = p.in.next_message(3000ms);
    REQUIRE(m);
    if (const auto* ch = std::get_if<model_chunk>(&m->msg())) {
      CHECK(ch->index == static_cast<uint32_t>(got));
      CHECK(ch->data == std::string(20000, static_cast<char>('a' + got)));
      ++got;
    }
  }
  auto took = std::chrono::steady_clock::now() - start;
  // 400 kB through a 400 kB/s budget with a 64 KiB burst: at least about 0.8 s.
  CHECK(took >= 700ms);
  CHECK(p.t->metrics().replays == 0);
  client->stop();
}
