// The network node in one process: a provider node on 127.0.0.1, a client node that finds it
// through discovery and runs jobs through the remote-provider proxies, and a raw peer (a bare
// transport) that sends the provider messages out of order, lies about uploads and underpays.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <thread>

#include <caf/all.hpp>

#include "actors/client.h"
#include "actors/node.h"
#include "actors/provider.h"
#include "actors/testing/faulty_provider.h"
#include "actors/test_models.h"
#include "actors/wire_convert.h"
#include "net/chunker.h"
#include "net/inbox.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using gpugrid::grid::testing::add_relu_model;

namespace {

struct provider_fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::string dir;
  std::shared_ptr<provider_core> core;
  std::unique_ptr<grid_node> node;

  explicit provider_fixture(const std::string& fault = "") {
    configure_actor_system(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    dir = (std::filesystem::temp_directory_path() / ("gg-node-" + std::to_string(::getpid()) + fault)).string();
    std::filesystem::remove_all(dir);
    auto cache = model_cache::open(dir + "/models", 1 << 20);
    REQUIRE(cache.has_value());
    provider_options po;
    po.device = "cpu";
    po.threads = 1;
    po.max_model_bytes = 1 << 16;
    auto id = net::identity::generate();
    auto f = gpugrid::grid::testing::parse_fault(fault);
    REQUIRE(f.has_value());
    core = std::make_shared<gpugrid::grid::testing::faulty_provider>(keypair_of(id), std::shared_ptr<model_cache>(std::move(cache).value()),
                                                      po, nullptr, *f);
    node_options no;
    no.listen = "127.0.0.1:0";
    no.provider = core;
    auto n = grid_node::start(*sys, id, no);
    REQUIRE(n.has_value());
    node = std::move(n).value();
  }
  ~provider_fixture() {
    node->stop();
    std::filesystem::remove_all(dir);
  }
};

// A bare peer: a transport whose messages land in an inbox.
struct raw_peer {
  net::inbox box;
  std::unique_ptr<net::transport> t;
  net::connection_ptr conn;
  net::identity id = net::identity::generate();
  explicit raw_peer(const std::string& url, uint16_t newest_version = net::kProtocolVersion) {
    net::transport_options o;
    o.session_mac = true;
    o.newest_version = newest_version;
    auto tr = net::transport::create(id, o, box.handlers());
    REQUIRE(tr.has_value());
    t = std::move(tr).value();
    auto c = t->connect_sync(url);
    REQUIRE(c.has_value());
    conn = *c;
  }
  ~raw_peer() { t->stop(); }
  // The next message of type T (others are skipped), or nullopt after 5 s.
  template <typename T>
  std::optional<T> next() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      auto in = box.next_message(std::chrono::milliseconds(100));
      if (!in) continue;
      if (auto* m = std::get_if<T>(&in->msg())) return *m;
    }
    return std::nullopt;
  }
};

net::execute execute_of(const net::job_id& job, const std::string& model, double price) {
  execute_request r;
  r.job = job;
  r.model_hash = ledger::blake2b_256(model);
  r.inputs = {tensor::from_vector<float>({1, 3}, {1, -2, 3})};
  r.input_digest = tensors_digest(r.inputs);
  r.price = price;
  return to_wire_execute(r);
}

// Sends `payload` announced under `hash` (which it may not match) in 1 KiB chunks.
void upload(raw_peer& peer, const ledger::digest32& hash, const std::string& payload, const net::job_id& job) {
  auto plan = net::plan_transfer(hash, payload.size(), 1024, job);
  REQUIRE(peer.conn->send(plan) == net::send_result::queued);
  for (uint32_t i = 0; i < net::chunk_count(plan.total_bytes, plan.chunk_bytes); ++i)
    REQUIRE(peer.conn->send(net::chunk_at(plan, payload, i)) == net::send_result::queued);
}

net::bid_request bid_request_of(const net::job_id& job, const std::string& model) {
  net::bid_request b;
  b.job = job;
  b.model_hash = ledger::blake2b_256(model);
  b.model_bytes = model.size();
  b.gflops = 0.001;
  return b;
}

}  // namespace

TEST_CASE("a client node finds a provider node and runs jobs through it, and the model is sent once", "[grid][net]") {
  provider_fixture p;
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  node_options no;
  no.bootstrap = {p.node->url()};
  auto id = net::identity::generate();  // the node's key is the key that signs its receipts
  auto client = grid_node::start(sys, id, no);
  REQUIRE(client.has_value());
  CHECK((*client)->settle(std::chrono::seconds(5)).empty());
  auto providers = (*client)->providers();
  REQUIRE(providers.size() == 1);
  CHECK(providers[0].key == p.core->key());

  job_spec job;
  auto bytes = std::make_shared<std::string>(add_relu_model());
  job.model_bytes = bytes;
  job.model_hash = ledger::blake2b_256(*bytes);
  job.gflops = 0.001;
  job.inputs = {tensor::from_vector<float>({2, 3}, {1, 2, 3, -4, 0.25f, -9})};
  keypair me = keypair_of(id);
  for (int round = 0; round < 2; ++round) {
    auto r = run_job(sys, providers, job, client_options{}, me, nullptr, nullptr, nullptr, [](const std::string&) {});
    REQUIRE(r.has_value());
    REQUIRE(r->outputs.size() == 1);
    const float* y = r->outputs[0].data<float>();
    CHECK(y[0] == Approx(1.5f));
    CHECK(y[2] == Approx(5.0f));
    CHECK(y[3] == Approx(0.0f));
    REQUIRE(r->providers.size() == 1);
    CHECK(r->providers[0].paid);
    CHECK(p.core->counters().model_bytes_received.load() == static_cast<int64_t>(bytes->size()));  // once
  }
  CHECK(p.core->counters().jobs.load() == 2);
  // The provider's metrics endpoint text names the same counts.
  std::string m = p.node->metrics_text();
  CHECK(m.find("gpugrid_jobs_total 2\n") != std::string::npos);
  CHECK(m.find("gpugrid_model_bytes_received_total " + std::to_string(bytes->size()) + "\n") != std::string::npos);
  (*client)->stop();
}

TEST_CASE("a persistent client reuses a standing bid: later jobs of the model skip the bidding round", "[grid][net]") {
  provider_fixture p;
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  node_options no;
  no.bootstrap = {p.node->url()};
  auto id = net::identity::generate();
  auto client = grid_node::start(sys, id, no);
  REQUIRE(client.has_value());
  (*client)->settle(std::chrono::seconds(5));
  auto providers = (*client)->providers();
  REQUIRE(providers.size() == 1);
  job_spec job;
  auto bytes = std::make_shared<std::string>(add_relu_model());
  job.model_bytes = bytes;
  job.model_hash = ledger::blake2b_256(*bytes);
  job.gflops = 0.001;
  job.inputs = {tensor::from_vector<float>({1, 3}, {1, 2, 3})};
  quote_book quotes;
  client_options co;
  co.quotes = &quotes;
  for (int i = 0; i < 4; ++i) {
    auto r = run_job(sys, providers, job, co, keypair_of(id), nullptr, nullptr, nullptr, [](const std::string&) {});
    REQUIRE(r.has_value());
    CHECK(r->providers[0].paid);
    CHECK(r->outputs[0].data<float>()[2] == Approx(5.0f));
  }
  CHECK(p.core->counters().bids.load() == 1);   // one bidding round for four jobs
  CHECK(p.core->counters().jobs.load() == 4);
  CHECK(p.core->counters().model_bytes_received.load() == static_cast<int64_t>(bytes->size()));
  CHECK(quotes.size() == 1);
  // A quote the provider no longer honours (here: a forged lower price) fails once, then the
  // client bids afresh and the job still runs.
  auto q = quotes.get(p.core->key(), job.model_hash, unix_ms());
  REQUIRE(q.has_value());
  bid_reply cheap = q->bid;
  cheap.price /= 10;
  quotes.put(cheap, job.model_hash, unix_ms());
  quotes.mark_cached(p.core->key(), job.model_hash);
  auto r = run_job(sys, providers, job, co, keypair_of(id), nullptr, nullptr, nullptr, [](const std::string&) {});
  REQUIRE(r.has_value());
  CHECK(r->providers[0].paid);
  CHECK(p.core->counters().bids.load() == 2);
  (*client)->stop();
}

TEST_CASE("a provider node refuses jobs it did not bid on, underpaid jobs and lying uploads", "[grid][net]") {
  provider_fixture p;
  raw_peer peer(p.node->url());
  std::string model = add_relu_model();

  SECTION("execute without a bid") {
    REQUIRE(peer.conn->send(execute_of(net::job_id{1}, model, 1.0)) == net::send_result::queued);
    auto e = peer.next<net::job_error>();
    REQUIRE(e.has_value());
    CHECK(e->code == net::job_error_code::not_awarded);
  }
  SECTION("a price below the bid") {
    net::job_id job{2};
    REQUIRE(peer.conn->send(bid_request_of(job, model)) == net::send_result::queued);
    auto b = peer.next<net::bid>();
    REQUIRE(b.has_value());
    CHECK(net::verify_bid(*b, p.core->key()));
    CHECK_FALSE(b->model_cached);
    REQUIRE(peer.conn->send(execute_of(job, model, b->price / 2)) == net::send_result::queued);
    auto e = peer.next<net::job_error>();
    REQUIRE(e.has_value());
    CHECK(e->code == net::job_error_code::not_awarded);
  }
  SECTION("a model too big for the provider is declined at the bid") {
    net::bid_request big = bid_request_of(net::job_id{3}, model);
    big.model_bytes = 1 << 20;
    REQUIRE(peer.conn->send(big) == net::send_result::queued);
    auto d = peer.next<net::bid_decline>();
    REQUIRE(d.has_value());
    CHECK(d->reason == net::decline_reason::too_big);
  }
  SECTION("an upload whose bytes do not match its hash is dropped; the job then lacks the model") {
    net::job_id job{4};
    REQUIRE(peer.conn->send(bid_request_of(job, model)) == net::send_result::queued);
    auto b = peer.next<net::bid>();
    REQUIRE(b.has_value());
    std::string forged = model;
    forged[forged.size() / 2] ^= 0x55;
    upload(peer, ledger::blake2b_256(model), forged, job);
    REQUIRE(peer.conn->send(execute_of(job, model, b->price)) == net::send_result::queued);
    auto e = peer.next<net::job_error>();
    REQUIRE(e.has_value());
    CHECK(e->code == net::job_error_code::model_missing);
    CHECK(p.core->counters().model_bytes_received.load() == 0);
  }
  SECTION("a correct upload runs, and the result's receipt is signed by the provider") {
    net::job_id job{5};
    REQUIRE(peer.conn->send(bid_request_of(job, model)) == net::send_result::queued);
    auto b = peer.next<net::bid>();
    REQUIRE(b.has_value());
    upload(peer, ledger::blake2b_256(model), model, job);
    REQUIRE(peer.conn->send(execute_of(job, model, b->price)) == net::send_result::queued);
    auto r = peer.next<net::result>();
    REQUIRE(r.has_value());
    auto res = from_wire_result(*r, p.core->key());
    REQUIRE(res->ok);
    CHECK(res->outputs[0].data<float>()[0] == Approx(1.5f));
    CHECK(ledger::verify_provider_signature(res->receipt).is_ok());
    CHECK(ledger::verify_signature(p.core->key(), ledger::result_statement(job, r->output_digest), r->signature));
    // A countersignature for a job that was not issued is refused; the issued one is taken once.
    ledger::receipt forged = res->receipt;
    forged.price_micros += 1;
    CHECK_FALSE(p.core->accept_receipt(forged).is_ok());
    // The countersigned receipt is answered: recorded, and recorded again when sent twice.
    ledger::receipt paid = res->receipt;
    ledger::sign_as_client(paid, peer.id.secret_key());
    for (int k = 0; k < 2; ++k) {
      REQUIRE(peer.conn->send(net::message(paid)) == net::send_result::queued);
      auto ack = peer.next<net::receipt_ack>();
      REQUIRE(ack.has_value());
      CHECK(ack->job == job);
      CHECK(ack->status == net::receipt_status::recorded);
    }
    // An altered receipt is refused for good.
    REQUIRE(peer.conn->send(net::message(forged)) == net::send_result::queued);
    auto refused = peer.next<net::receipt_ack>();
    REQUIRE(refused.has_value());
    CHECK(refused->status == net::receipt_status::rejected);
  }
  // Whatever happened, the node still serves: a fresh bid gets an answer.
  REQUIRE(peer.conn->send(bid_request_of(net::job_id{9}, model)) == net::send_result::queued);
  CHECK(peer.next<net::bid>().has_value());
}

TEST_CASE("a version 1 client gets no ReceiptAck, which it could not read", "[grid][net][receipts]") {
  provider_fixture p;
  raw_peer peer(p.node->url(), 1);
  REQUIRE(peer.conn->version() == 1);
  std::string model = add_relu_model();
  ledger::receipt r;
  r.client_key = peer.id.public_key();
  REQUIRE(peer.conn->send(net::message(r)) == net::send_result::queued);
  REQUIRE(peer.conn->send(bid_request_of(net::job_id{3}, model)) == net::send_result::queued);
  bool acked = false, bid = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!bid && std::chrono::steady_clock::now() < deadline) {
    auto in = peer.box.next_message(std::chrono::milliseconds(100));
    if (!in) continue;
    acked |= std::holds_alternative<net::receipt_ack>(in->msg());
    bid |= std::holds_alternative<net::bid>(in->msg());
  }
  CHECK(bid);  // the connection is still open
  CHECK_FALSE(acked);
}

TEST_CASE("a provider node queues a bounded number of jobs, however many bids a client holds", "[grid][net]") {
  provider_fixture p("stall");  // one slot; every job stalls until the node stops
  raw_peer peer(p.node->url());
  std::string model = add_relu_model();
  // Six bids while the provider is idle, then six executions (the model comes with the first).
  std::vector<double> prices;
  for (uint8_t j = 1; j <= 6; ++j) {
    REQUIRE(peer.conn->send(bid_request_of(net::job_id{j}, model)) == net::send_result::queued);
    auto b = peer.next<net::bid>();
    REQUIRE(b.has_value());
    prices.push_back(b->price);
  }
  upload(peer, ledger::blake2b_256(model), model, net::job_id{1});
  for (uint8_t j = 1; j <= 6; ++j)
    REQUIRE(peer.conn->send(execute_of(net::job_id{j}, model, prices[j - 1])) == net::send_result::queued);
  // The first four are held (one running, three waiting); the last two are refused as busy.
  for (int k = 0; k < 2; ++k) {
    auto e = peer.next<net::job_error>();
    REQUIRE(e.has_value());
    CHECK(e->code == net::job_error_code::busy);
    CHECK((e->job[0] == 5 || e->job[0] == 6));
  }
  CHECK(p.node->metrics_text().find("gpugrid_jobs_in_flight 4\n") != std::string::npos);
}

TEST_CASE("three provider nodes learn each other through one bootstrap peer", "[grid][net][discovery]") {
  provider_fixture a("");
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  std::vector<std::unique_ptr<grid_node>> others;
  for (int i = 0; i < 2; ++i) {
    provider_options po;
    po.device = "cpu";
    node_options no;
    no.listen = "127.0.0.1:0";
    no.provider = std::make_shared<provider_core>(keypair::generate(), nullptr, po, nullptr);
    no.bootstrap = {a.node->url()};
    auto n = grid_node::start(sys, net::identity::generate(), no);
    REQUIRE(n.has_value());
    others.push_back(std::move(n).value());
  }
  bool full = false;
  for (int i = 0; i < 250 && !full; ++i) {
    full = a.node->known_peers() == 2 && others[0]->known_peers() == 2 && others[1]->known_peers() == 2;
    if (!full) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(full);
  for (auto& v : others[0]->peers()) CHECK(v.record.is_provider);
  for (auto& n : others) n->stop();
}

TEST_CASE("announced uploads hold only the bytes that arrived, within the node's budget", "[grid][net]") {
  provider_fixture p;  // models up to 64 KiB; uploads held at once: 128 KiB
  auto held = [&] {
    std::string m = p.node->metrics_text();
    auto at = m.find("\ngpugrid_upload_bytes_held ");
    REQUIRE(at != std::string::npos);
    return std::stoll(m.substr(at + 27));
  };
  std::vector<std::unique_ptr<raw_peer>> peers;
  for (int i = 0; i < 3; ++i) {
    peers.push_back(std::make_unique<raw_peer>(p.node->url()));
    // Announce the largest model allowed, send two 1 KiB chunks of it.
    std::string fake(60 << 10, static_cast<char>('a' + i));
    auto plan = net::plan_transfer(ledger::blake2b_256(fake), fake.size(), 1024, net::job_id{static_cast<uint8_t>(i + 1)});
    REQUIRE(peers.back()->conn->send(plan) == net::send_result::queued);
    for (uint32_t c = 0; c < 2; ++c) REQUIRE(peers.back()->conn->send(net::chunk_at(plan, fake, c)) == net::send_result::queued);
  }
  int64_t h = 0;
  for (int i = 0; i < 200 && (h = held()) < 3 * 2048; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(h == 3 * 2048);  // not 3 x 60 KiB
  // A connection that goes away gives its bytes back.
  peers.pop_back();
  for (int i = 0; i < 200 && (h = held()) > 2 * 2048; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(h == 2 * 2048);
}

TEST_CASE("a job stops when its client goes away", "[grid][net]") {
  provider_fixture p("slow");  // each job waits a second before it runs
  std::string model = add_relu_model();
  {
    raw_peer peer(p.node->url());
    REQUIRE(peer.conn->send(bid_request_of(net::job_id{1}, model)) == net::send_result::queued);
    auto b = peer.next<net::bid>();
    REQUIRE(b.has_value());
    upload(peer, ledger::blake2b_256(model), model, net::job_id{1});
    REQUIRE(peer.conn->send(execute_of(net::job_id{1}, model, b->price)) == net::send_result::queued);
    for (int i = 0; i < 200 && p.core->counters().busy.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(p.core->counters().busy.load() == 1);
  }  // the client disconnects mid-job
  auto t0 = std::chrono::steady_clock::now();
  while (p.core->counters().failures.load() == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(p.core->counters().failures.load() == 1);
  CHECK(p.core->counters().jobs.load() == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(800));  // sooner than the job's second
}

TEST_CASE("draining finishes the running job and delivers its result before returning", "[grid][net]") {
  provider_fixture p("slow");
  raw_peer peer(p.node->url());
  std::string model = add_relu_model();
  REQUIRE(peer.conn->send(bid_request_of(net::job_id{1}, model)) == net::send_result::queued);
  auto b = peer.next<net::bid>();
  REQUIRE(b.has_value());
  upload(peer, ledger::blake2b_256(model), model, net::job_id{1});
  REQUIRE(peer.conn->send(execute_of(net::job_id{1}, model, b->price)) == net::send_result::queued);
  for (int i = 0; i < 200 && p.core->counters().busy.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(p.core->counters().busy.load() == 1);
  CHECK(p.node->drain(std::chrono::seconds(10)) == 0);  // nothing handed back
  p.node->stop();  // as `offer` does right after drain()
  auto r = peer.next<net::result>();
  REQUIRE(r.has_value());
  CHECK(r->job == net::job_id{1});
}

TEST_CASE("a job the client gave up on stops on the remote provider", "[grid][net][client]") {
  provider_fixture p("stall");  // runs nothing until its job is cancelled
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  node_options no;
  no.bootstrap = {p.node->url()};
  auto id = net::identity::generate();
  auto client = grid_node::start(sys, id, no);
  REQUIRE(client.has_value());
  CHECK((*client)->settle(std::chrono::seconds(5)).empty());
  auto providers = (*client)->providers();
  REQUIRE(providers.size() == 1);
  job_spec job;
  auto bytes = std::make_shared<std::string>(add_relu_model());
  job.model_bytes = bytes;
  job.model_hash = ledger::blake2b_256(*bytes);
  job.gflops = 0.001;
  job.inputs = {tensor::from_vector<float>({2, 3}, {1, 2, 3, -4, 0.25f, -9})};
  client_options co;
  co.timeout_s = 0.5;
  auto r = run_job(sys, providers, job, co, keypair_of(id), nullptr, nullptr, nullptr, [](const std::string&) {});
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind() == error_kind::no_provider);
  CHECK_THAT(r.error().message(), Catch::Contains("timed out"));
  // The client's connection stays up; the provider hears of the cancel and frees its slot.
  for (int i = 0; i < 250 && p.core->counters().failures.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(p.core->counters().failures.load() == 1);
  CHECK(p.core->counters().busy.load() == 0);
  (*client)->stop();
}
