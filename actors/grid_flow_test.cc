// The client's job flow against in-process providers (honest, corrupting, stalling): the
// same actors and messages the network grid uses, without sockets.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include <caf/all.hpp>

#include "actors/client.h"
#include "actors/embedded.h"
#include "actors/provider.h"
#include "actors/testing/faulty_provider.h"
#include "actors/test_models.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using gpugrid::grid::testing::add_relu_model;

namespace {

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<std::shared_ptr<provider_core>> cores;
  std::vector<provider_handle> handles;
  std::string dir;
  fixture() {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    dir = (std::filesystem::temp_directory_path() / ("gg-flow-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  ~fixture() {
    for (auto& c : cores) c->stop();
    for (auto& h : handles) caf::anon_send_exit(h.actor, caf::exit_reason::user_shutdown);
    std::filesystem::remove_all(dir);
  }
  void add(const std::string& fault, double price) {
    provider_options po;
    po.device = "cpu";
    po.threads = 1;
    po.price.price_per_gflop = price;
    po.price.minimum = price;
    std::string pdir = dir + "/p" + std::to_string(cores.size());
    auto cache = model_cache::open(pdir + "/models", 1 << 20);
    auto led = ledger::ledger_file::open(pdir);
    REQUIRE(cache.has_value());
    REQUIRE(led.has_value());
    auto f = gpugrid::grid::testing::parse_fault(fault);
    REQUIRE(f.has_value());
    std::shared_ptr<provider_core> core = std::make_shared<gpugrid::grid::testing::faulty_provider>(
        keypair::generate(), std::shared_ptr<model_cache>(std::move(cache).value()), po,
        std::shared_ptr<ledger::ledger_file>(std::move(led).value()), *f);
    cores.push_back(core);
    handles.push_back({spawn_provider(*sys, core), core->key(), "p" + std::to_string(cores.size() - 1)});
  }
};

job_spec make_job() {
  job_spec j;
  auto bytes = std::make_shared<std::string>(add_relu_model());
  j.model_bytes = bytes;
  j.model_hash = ledger::blake2b_256(*bytes);
  j.gflops = 1;
  j.inputs = {tensor::from_vector<float>({2, 3}, {1, 2, 3, -4, 0.25f, -9})};
  return j;
}

const std::vector<float> expected_y = {1.5f, 1.0f, 5.0f, 0.0f, 0.0f, 0.0f};

void check_output(const std::vector<tensor>& out) {
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].numel() == 6);
  for (int i = 0; i < 6; ++i) CHECK(out[0].data<float>()[i] == Approx(expected_y[i]));
}

auto quiet = [](const std::string&) {};

}  // namespace

TEST_CASE("a job runs through bid, award and execution, and both sides record the receipt", "[grid]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("", 0.002);
  f.add("", 0.001);  // cheaper: wins
  keypair client = keypair::generate();
  auto led = ledger::ledger_file::open(f.dir + "/client");
  REQUIRE(led.has_value());
  auto rep = reputation_book::load(f.dir + "/client");
  REQUIRE(rep.has_value());
  auto r = run_job(*f.sys, f.handles, make_job(), client_options{}, client, &*rep, led->get(), nullptr, quiet);
  REQUIRE(r.has_value());
  check_output(r->outputs);
  REQUIRE(r->providers.size() == 1);
  CHECK(r->providers[0].paid);
  CHECK(r->providers[0].node == node_hex(f.cores[1]->key()));
  // Both ledgers hold the same countersigned receipt; what the client paid, the provider earned.
  auto client_entries = *ledger::read_entries((*led)->path(), nullptr);
  REQUIRE(client_entries.size() == 1);
  CHECK(ledger::verify_entries(client_entries).is_ok());
  auto provider_entries = ledger::read_entries(f.dir + "/p1/ledger.log", nullptr);
  REQUIRE(provider_entries.has_value());
  REQUIRE(provider_entries->size() == 1);
  CHECK(provider_entries->at(0).rec.canonical_bytes() == client_entries[0].rec.canonical_bytes());
  // The second run of the same model sends no model bytes.
  int64_t before = f.cores[1]->counters().model_bytes_received;
  CHECK(before > 0);
  auto again = run_job(*f.sys, f.handles, make_job(), client_options{}, client, &*rep, led->get(), nullptr, quiet);
  REQUIRE(again.has_value());
  CHECK(f.cores[1]->counters().model_bytes_received == before);
}

TEST_CASE("redundancy catches a corrupting provider, which then loses its reputation", "[grid]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("corrupt", 0.0005);  // cheapest, so it is always chosen
  f.add("", 0.001);
  f.add("", 0.002);
  keypair client = keypair::generate();
  auto led = ledger::ledger_file::open(f.dir + "/client");
  auto rep = reputation_book::load(f.dir + "/client");
  REQUIRE(led.has_value());
  REQUIRE(rep.has_value());
  client_options o;
  o.redundancy = 2;
  auto r = run_job(*f.sys, f.handles, make_job(), o, client, &*rep, led->get(), nullptr, quiet);
  REQUIRE(r.has_value());  // the tie-break on the third provider settles it
  check_output(r->outputs);
  CHECK(r->agreeing == 2);
  std::string liar = node_hex(f.cores[0]->key());
  CHECK(rep->score(liar) < reputation_book::initial);
  // The evidence is in the ledger as a dispute; both agreeing providers were paid.
  int payments = 0, disputes = 0;
  auto entries = ledger::read_entries((*led)->path(), nullptr);
  REQUIRE(entries.has_value());
  for (const auto& e : *entries) {
    if (e.rec.kind == ledger::receipt_kind::payment) ++payments;
    if (e.rec.kind == ledger::receipt_kind::dispute) { ++disputes; CHECK(e.rec.provider_key == f.cores[0]->key()); }
  }
  CHECK(payments == 2);
  CHECK(disputes == 1);
  // After a second offence it is no longer asked to bid.
  (void)run_job(*f.sys, f.handles, make_job(), o, client, &*rep, led->get(), nullptr, quiet);
  CHECK_FALSE(rep->trusted(liar));
  int64_t bids = f.cores[0]->counters().bids;
  auto later = run_job(*f.sys, f.handles, make_job(), o, client, &*rep, led->get(), nullptr, quiet);
  REQUIRE(later.has_value());
  CHECK(f.cores[0]->counters().bids == bids);
}

TEST_CASE("with only two disagreeing providers and nothing to break the tie, the job fails verification", "[grid]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("corrupt", 0.001);
  f.add("", 0.001);
  keypair client = keypair::generate();
  client_options o;
  o.redundancy = 2;
  auto r = run_job(*f.sys, f.handles, make_job(), o, client, nullptr, nullptr, nullptr, quiet);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind() == error_kind::verification);
  CHECK(exit_code_for(r.error().kind()) == 4);
}

TEST_CASE("a stalling provider times out and the next bid runs the job", "[grid]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("stall", 0.0001);
  f.add("", 0.001);
  keypair client = keypair::generate();
  auto rep = reputation_book::load(f.dir + "/client");
  REQUIRE(rep.has_value());
  client_options o;
  o.timeout_s = 0.5;
  auto r = run_job(*f.sys, f.handles, make_job(), o, client, &*rep, nullptr, nullptr, quiet);
  REQUIRE(r.has_value());
  check_output(r->outputs);
  CHECK(rep->entry(node_hex(f.cores[0]->key())).timed_out == 1);
  // Later runs, even from a book read back from disk, do not ask it while it cools down.
  std::filesystem::create_directories(f.dir + "/client");
  REQUIRE(rep->save().is_ok());
  auto reread = reputation_book::load(f.dir + "/client");
  REQUIRE(reread.has_value());
  int64_t bids = f.cores[0]->counters().bids;
  for (int i = 0; i < 3; ++i) {
    auto again = run_job(*f.sys, f.handles, make_job(), o, client, &*reread, nullptr, nullptr, quiet);
    REQUIRE(again.has_value());
  }
  CHECK(f.cores[0]->counters().bids == bids);
}

TEST_CASE("a provider never verified is spot-checked on every job, and one lie ends its trust", "[grid]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("corrupt", 0.0005);
  f.add("", 0.001);
  keypair client = keypair::generate();
  auto rep = reputation_book::load(f.dir + "/client");
  REQUIRE(rep.has_value());
  client_options o;
  o.spot_check_rate = 0.05;  // the floor; a new provider is checked every time regardless
  local_runner local = [](const std::vector<tensor>&) -> expected<std::vector<tensor>> {
    return std::vector<tensor>{tensor::from_vector<float>({2, 3}, {1.5f, 1.0f, 5.0f, 0.0f, 0.0f, 0.0f})};
  };
  std::string liar = node_hex(f.cores[0]->key());
  auto r = run_job(*f.sys, f.handles, make_job(), o, client, &*rep, nullptr, local, quiet);
  REQUIRE_FALSE(r.has_value());  // caught on its first job
  CHECK(r.error().kind() == error_kind::verification);
  CHECK_FALSE(rep->trusted(liar));
  auto next = run_job(*f.sys, f.handles, make_job(), o, client, &*rep, nullptr, local, quiet);
  REQUIRE(next.has_value());
  check_output(next->outputs);
  CHECK(next->providers.at(0).node == node_hex(f.cores[1]->key()));
}

TEST_CASE("a job cancelled by its caller stops at the provider and pays nothing", "[grid][client]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("stall", 0.001);   // answers only once the job is cancelled
  keypair client = keypair::generate();
  auto led = ledger::ledger_file::open(f.dir + "/client");
  REQUIRE(led.has_value());
  std::atomic<bool> cancel{false};
  client_options o;
  o.timeout_s = 20;
  o.cancel = &cancel;
  auto t0 = std::chrono::steady_clock::now();
  std::thread caller([&] {
    while (f.cores[0]->counters().busy.load() == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    cancel = true;   // the job is running at the provider now
  });
  auto r = run_job(*f.sys, f.handles, make_job(), o, client, nullptr, led->get(), nullptr, quiet);
  caller.join();
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message().find("cancelled") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  // The provider saw the cancel: its worker left the stalled job.
  for (int i = 0; i < 500 && f.cores[0]->counters().busy.load() != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(f.cores[0]->counters().busy.load() == 0);
  // Nothing was paid or recorded on either side.
  CHECK(ledger::read_entries((*led)->path(), nullptr)->empty());
  auto provider_entries = ledger::read_entries(f.dir + "/p0/ledger.log", nullptr);
  CHECK((!provider_entries || provider_entries->empty()));
  // A job cancelled before it starts never reaches a provider.
  int64_t bids = f.cores[0]->counters().bids.load();
  auto r2 = run_job(*f.sys, f.handles, make_job(), o, client, nullptr, led->get(), nullptr, quiet);
  REQUIRE_FALSE(r2.has_value());
  CHECK(f.cores[0]->counters().bids.load() == bids);
}

TEST_CASE("a provider lost while the client checks its result locally: the job ends, paid and recorded", "[grid][client]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  fixture f;
  f.add("", 0.001);
  keypair client = keypair::generate();
  auto led = ledger::ledger_file::open(f.dir + "/client");
  REQUIRE(led.has_value());
  client_options o;
  o.spot_check_rate = 1;
  // The check runs on this thread while the job's actor waits for it; the provider goes away
  // meanwhile, and its down message must reach the job only after the check's result.
  std::atomic<int> checks{0};
  local_runner local = [&](const std::vector<tensor>&) -> expected<std::vector<tensor>> {
    ++checks;
    caf::anon_send_exit(f.handles[0].actor, caf::exit_reason::user_shutdown);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return std::vector<tensor>{tensor::from_vector<float>({2, 3}, expected_y)};
  };
  std::vector<std::string> notes;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_job(*f.sys, f.handles, make_job(), o, client, nullptr, led->get(), local,
                   [&](const std::string& s) { notes.push_back(s); });
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  CHECK(checks == 1);
  REQUIRE(r.has_value());
  check_output(r->outputs);
  REQUIRE(r->providers.size() == 1);
  CHECK(r->providers[0].paid);
  // The client recorded what it paid; the receipt could not be delivered, and the job says so.
  CHECK(ledger::read_entries((*led)->path(), nullptr)->size() == 1);
  bool told = false;
  for (const auto& n : notes) told = told || n.find("not recorded its receipt") != std::string::npos;
  CHECK(told);
}
