#include "discovery/dht.h"

#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <sodium.h>

#include "discovery/simulator.h"

using namespace gpugrid::discovery;

namespace {

// Nodes that deliver every message at once (no delay, no loss) until nothing moves.
struct instant_net {
  struct member {
    std::unique_ptr<dht> d;
    std::array<uint8_t, 64> sk{};
    bool alive = true;
  };
  std::map<node_id, member> nodes;
  std::vector<lookup_result> results;
  int64_t now = 1'000'000'000;
  dht_config cfg;
  uint64_t messages = 0;

  node_id add(uint8_t a, uint8_t b, bool client = false) {
    std::array<uint8_t, 32> seed{};
    seed[0] = a;
    seed[1] = b;
    seed[2] = client;
    member m;
    node_id id;
    crypto_sign_seed_keypair(id.data(), m.sk.data(), seed.data());
    const auto sk = m.sk;
    m.d = std::make_unique<dht>(contact{id, client ? "" : "ws://" + short_hex(id) + ":7447"}, cfg,
                                [sk](provider_record& r) { sign_record(r, sk); }, a * 256u + b);
    nodes[id] = std::move(m);
    return id;
  }
  dht& at(const node_id& id) { return *nodes.at(id).d; }

  void run() {
    for (int rounds = 0; rounds < 100000; ++rounds) {
      bool moved = false;
      for (auto& [id, m] : nodes) {
        if (!m.alive) continue;
        for (auto& o : m.d->take_outbox()) {
          moved = true;
          ++messages;
          auto to = nodes.find(o.to.id);
          if (to == nodes.end() || !to->second.alive) {
            m.d->on_unreachable(now, o.to.id);
            continue;
          }
          if (auto* q = std::get_if<dht_query>(&o.msg)) (void)to->second.d->on_query(now, id, *q);
          else (void)to->second.d->on_reply(now, id, std::get<dht_reply>(o.msg));
        }
        for (auto& r : m.d->take_results()) results.push_back(std::move(r));
      }
      if (!moved) return;
    }
    FAIL("the network never settled");
  }
  void tick_all() {
    for (auto& [id, m] : nodes)
      if (m.alive) m.d->tick(now);
    run();
  }
};

provider_record own_record(const node_id& id, const std::array<uint8_t, 64>& sk, const dht_key& key, int64_t now) {
  provider_record r;
  r.key = key;
  r.provider = id;
  r.addresses = {"ws://p:1"};
  r.device_class = "cpu";
  r.price = 0.001;
  r.issued_ms = now;
  r.expires_ms = now + 60'000;
  sign_record(r, sk);
  return r;
}

}  // namespace

TEST_CASE("providers announced in a 200-node DHT are found without asking everyone", "[discovery]") {
  REQUIRE(sodium_init() >= 0);
  instant_net net;
  std::vector<node_id> ids;
  for (int i = 0; i < 200; ++i) {
    ids.push_back(net.add(static_cast<uint8_t>(i), 1));
    if (i > 0) net.at(ids.back()).add_seeds({net.at(ids[static_cast<size_t>(i) / 2]).self()});
    net.at(ids.back()).bootstrap(net.now);
    net.run();
  }
  std::array<uint8_t, 32> model{};
  model[0] = 42;
  // 30 providers cache the model: 10 on cuda under 0.002, the rest on cpu.
  for (int i = 0; i < 30; ++i) {
    dht& d = net.at(ids[static_cast<size_t>(i) * 6]);
    const std::string cls = i < 10 ? "cuda-sm90-80g" : "cpu";
    const double price = i < 10 ? 0.001 + 0.0001 * i : 0.0002;
    const std::vector<std::string> addr{d.self().address};
    REQUIRE(d.set_announcements(net.now, {{model_key(model), addr, cls, price}, {providers_key(), addr, cls, price}})
                .is_ok());
  }
  net.tick_all();

  const node_id client = net.add(7, 7, true);
  net.at(client).add_seeds({net.at(ids[5]).self(), net.at(ids[77]).self()});
  const uint64_t before = net.messages;
  net.at(client).find_providers(net.now, model_key(model), {}, 20);
  net.run();
  REQUIRE(net.results.size() == 1);
  const lookup_result res = net.results.back();
  CHECK(res.records.size() == 20);
  CHECK(res.queried < 40);                    // not every node
  CHECK(net.messages - before < 100);
  for (const auto& r : res.records) CHECK(verify_record(r));

  // A filter: cuda at most 0.0015 matches 6 of the 30 (0.0010 .. 0.0015).
  net.results.clear();
  net.at(client).find_providers(net.now, model_key(model), {"cuda-sm90-80g", 0.00150001}, 20);
  net.run();
  REQUIRE(net.results.size() == 1);
  CHECK(net.results[0].records.size() == 6);
  for (const auto& r : net.results[0].records) CHECK(r.price <= 0.0015001);

  // The general key finds providers too.
  net.results.clear();
  net.at(client).find_providers(net.now, providers_key(), {}, 10);
  net.run();
  REQUIRE(net.results.size() == 1);
  CHECK(net.results[0].records.size() == 10);
}

TEST_CASE("a node cannot store records for another and forged records are refused", "[discovery]") {
  REQUIRE(sodium_init() >= 0);
  instant_net net;
  const node_id a = net.add(1, 2), b = net.add(3, 4), c = net.add(5, 6);
  const auto key = providers_key();
  dht_query q;
  q.request_id = 1;
  q.kind = query_kind::add_provider;
  q.target = key;
  q.sender_address = "ws://b:1";
  // b sends a's genuine record: refused (only a may store a's record).
  q.records = {own_record(a, net.nodes.at(a).sk, key, net.now)};
  REQUIRE(net.at(c).on_query(net.now, b, q).is_ok());
  CHECK(net.at(c).stored_records() == 0);
  // b signs a record claiming to be a: refused.
  provider_record forged = own_record(a, net.nodes.at(b).sk, key, net.now);
  q.records = {forged};
  (void)net.at(c).on_query(net.now, a, q);
  CHECK(net.at(c).stored_records() == 0);
  CHECK(net.at(c).stats().bad_signatures == 1);
  // Filed under another key than the query's: refused.
  q.records = {own_record(a, net.nodes.at(a).sk, device_key("cpu"), net.now)};
  (void)net.at(c).on_query(net.now, a, q);
  CHECK(net.at(c).stored_records() == 0);
  // a's own record from a: kept; the reply says so.
  q.records = {own_record(a, net.nodes.at(a).sk, key, net.now)};
  REQUIRE(net.at(c).on_query(net.now, a, q).is_ok());
  CHECK(net.at(c).stored_records() == 1);
  auto out = net.at(c).take_outbox();
  REQUIRE(!out.empty());
  CHECK(std::get<dht_reply>(out.back().msg).stored == 1);
  // It expires.
  CHECK(net.at(c).local_records(net.now + 59'000, key, {}, 10).size() == 1);
  CHECK(net.at(c).local_records(net.now + 61'000, key, {}, 10).empty());
  net.at(c).tick(net.now + 61'000 + 60'000);
  CHECK(net.at(c).stored_records() == 0);
}

TEST_CASE("stores are bounded per key and per source, and replies to nobody's request are refused", "[discovery]") {
  REQUIRE(sodium_init() >= 0);
  instant_net net;
  net.cfg.max_records_per_key = 4;
  net.cfg.max_keys_per_source = 2;
  const node_id holder = net.add(9, 9);
  std::vector<node_id> senders;
  for (int i = 0; i < 6; ++i) senders.push_back(net.add(10, static_cast<uint8_t>(i)));
  auto store = [&](const node_id& from, const dht_key& key, int64_t issued) {
    dht_query q;
    q.kind = query_kind::add_provider;
    q.target = key;
    q.sender_address = "ws://s:1";
    q.records = {own_record(from, net.nodes.at(from).sk, key, issued)};
    (void)net.at(holder).on_query(net.now, from, q);
  };
  for (const auto& s : senders) store(s, providers_key(), net.now);
  CHECK(net.at(holder).stored_records() == 4);
  // A later record (expires later) rotates in, replacing the one expiring first.
  store(senders[5], providers_key(), net.now + 1000);
  CHECK(net.at(holder).local_records(net.now, providers_key(), {}, 10).size() == 4);
  // One source: at most 2 keys.
  store(senders[0], device_key("a"), net.now);
  store(senders[0], device_key("b"), net.now);
  store(senders[0], device_key("c"), net.now);
  CHECK(net.at(holder).local_records(net.now, device_key("c"), {}, 10).empty());

  dht_reply stray;
  stray.request_id = 12345;
  CHECK_FALSE(net.at(holder).on_reply(net.now, senders[0], stray).is_ok());
  dht_reply huge;
  huge.nodes.resize(kMaxNodesPerReply + 1);
  CHECK_FALSE(validate(huge).is_ok());
  dht_query many;
  many.kind = query_kind::add_provider;
  many.records.resize(kMaxRecordsPerMessage + 1);
  CHECK_FALSE(net.at(holder).on_query(net.now, senders[0], many).is_ok());
}

TEST_CASE("dead nodes are evicted and lookups route around them", "[discovery]") {
  REQUIRE(sodium_init() >= 0);
  instant_net net;
  std::vector<node_id> ids;
  for (int i = 0; i < 60; ++i) {
    ids.push_back(net.add(static_cast<uint8_t>(i), 2));
    if (i > 0) net.at(ids.back()).add_seeds({net.at(ids[0]).self()});
    net.at(ids.back()).bootstrap(net.now);
    net.run();
  }
  const std::vector<std::string> addr{net.at(ids[59]).self().address};
  REQUIRE(net.at(ids[59]).set_announcements(net.now, {{providers_key(), addr, "cpu", 0.001}}).is_ok());
  net.tick_all();
  // Half the network dies (not the provider).
  for (int i = 0; i < 30; ++i) net.nodes.at(ids[static_cast<size_t>(i) * 2]).alive = false;
  const size_t before = net.at(ids[1]).table().size();
  net.at(ids[1]).find_providers(net.now, providers_key(), {}, 1);
  net.run();
  net.at(ids[1]).find_node(net.now, ids[40]);
  net.run();
  CHECK(net.at(ids[1]).table().size() <= before);
  bool found = false;
  for (const auto& r : net.results)
    for (const auto& rec : r.records) found = found || rec.provider == ids[59];
  CHECK(found);
}

TEST_CASE("a 300-node simulated network with delay, loss and churn finds live providers", "[discovery][sim]") {
  sim_config cfg;
  cfg.nodes = 300;
  cfg.models = 40;
  cfg.join_window_ms = 20'000;
  cfg.warmup_ms = 3 * 60'000;
  cfg.measure_ms = 2 * 60'000;
  cfg.lookups_per_sec = 2;
  cfg.churn_per_min = 0.02;
  cfg.loss = 0.01;
  cfg.seed = 7;
  const sim_report r = run_simulation(cfg);
  INFO(r.to_text());
  CHECK(r.lookups > 150);
  CHECK(r.findable >= 0.9);
  CHECK(r.lookup_ms_p50 < 2000);
  CHECK(r.churned > 5);
  CHECK(r.msgs_per_node_min > 0);
}
