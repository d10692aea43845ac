// Receipts until paid: the client's outbox, the provider's unpaid-job credit, recording a
// receipt issued before a restart, a provider that cannot write its ledger, and payment of
// every agreeing provider of a redundant job.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <caf/all.hpp>

#include "actors/client.h"
#include "actors/pay_recorder.h"
#include "actors/provider.h"
#include "actors/receipt_outbox.h"
#include "actors/test_models.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using gpugrid::grid::testing::add_relu_model;

namespace {

std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("gg-outbox-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

std::shared_ptr<const std::string> relu_model() {
  static auto m = std::make_shared<const std::string>(add_relu_model());
  return m;
}

struct provider_box {
  keypair id;
  std::string dir;
  std::vector<std::string> log;
  std::shared_ptr<provider_core> core;
  provider_box(keypair k, std::string d, int credit = 8) : id(k), dir(std::move(d)) { start(credit); }
  void start(int credit = 8) {
    provider_options po;
    po.device = "cpu";
    po.threads = 1;
    po.unpaid_credit = credit;
    po.unpaid_file = dir + "/unpaid.log";
    po.log = [this](const std::string& line) { log.push_back(line); };
    auto cache = model_cache::open(dir + "/models", 1 << 20);
    auto led = ledger::ledger_file::open(dir);
    REQUIRE(cache.has_value());
    REQUIRE(led.has_value());
    core = std::make_shared<provider_core>(id, std::shared_ptr<model_cache>(std::move(cache).value()), po,
                                           std::shared_ptr<ledger::ledger_file>(std::move(led).value()));
  }
  bid_reply bid(const keypair& client, uint8_t job) {
    bid_request b;
    b.job = job_id{job};
    b.client = client.public_key;
    b.model_hash = ledger::blake2b_256(*relu_model());
    b.gflops = 1;
    return core->bid(b);
  }
  // Runs one job for the client; returns the provider-signed receipt.
  ledger::receipt run(const keypair& client, uint8_t job) {
    execute_request ex;
    ex.job = job_id{job};
    ex.client = client.public_key;
    ex.model_hash = ledger::blake2b_256(*relu_model());
    ex.model_bytes = relu_model();
    ex.inputs = {tensor::from_vector<float>({2, 3}, {1, 2, 3, -4, 0.25f, -9})};
    ex.input_digest = tensors_digest(ex.inputs);
    ex.price = 0.001;
    auto r = core->execute(ex);
    REQUIRE(r.ok);
    return r.receipt;
  }
  size_t ledger_entries() {
    auto e = ledger::read_entries(dir + "/ledger.log", nullptr);
    REQUIRE(e.has_value());
    return e->size();
  }
};

ledger::receipt countersigned(ledger::receipt r, const keypair& client) {
  ledger::sign_as_client(r, client.secret_key);
  return r;
}

bool have_cpu() { return cpu::registry().find("", "Relu") != nullptr; }

// Runs fn with no room for a single byte more in any file of this process.
template <class Fn>
void without_file_room(Fn&& fn) {
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit none = old;
  none.rlim_cur = 0;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &none) == 0);
  fn();
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
  ::signal(SIGXFSZ, old_handler);
}

// The receipt of job number `job` (the low two bytes of its id) at 5 micros, signed by the
// provider and countersigned by the client.
ledger::receipt paid_receipt(const keypair& client, const keypair& provider, int job) {
  ledger::receipt r;
  r.job_id[0] = static_cast<uint8_t>(job);
  r.job_id[1] = static_cast<uint8_t>(job >> 8);
  r.client_key = client.public_key;
  r.provider_key = provider.public_key;
  r.price_micros = 5;
  ledger::sign_as_provider(r, provider.secret_key);
  return countersigned(r, client);
}

}  // namespace

TEST_CASE("the receipt outbox keeps receipts across reopening until removed", "[grid][receipts]") {
  std::string dir = temp_dir("box");
  keypair client = keypair::generate(), p1 = keypair::generate(), p2 = keypair::generate();
  auto make = [&](const keypair& p, uint8_t job) { return paid_receipt(client, p, job); };
  {
    auto box = receipt_outbox::open(dir);
    REQUIRE(box.has_value());
    REQUIRE((*box)->add(make(p1, 1)).is_ok());
    REQUIRE((*box)->add(make(p2, 1)).is_ok());  // the same job on another provider
    REQUIRE((*box)->add(make(p1, 2)).is_ok());
    REQUIRE((*box)->add(make(p1, 2)).is_ok());  // added twice: kept once
  }
  auto box = receipt_outbox::open(dir);
  REQUIRE(box.has_value());
  auto list = (*box)->pending();
  REQUIRE(list.has_value());
  REQUIRE(list->size() == 3);
  CHECK(list->at(0).provider_key == p1.public_key);
  CHECK(list->at(1).provider_key == p2.public_key);
  REQUIRE((*box)->remove(job_id{1}, p1.public_key).is_ok());
  list = (*box)->pending();
  REQUIRE(list->size() == 2);
  CHECK(list->at(0).provider_key == p2.public_key);
  REQUIRE((*box)->remove(job_id{1}, p2.public_key).is_ok());
  REQUIRE((*box)->remove(job_id{2}, p1.public_key).is_ok());
  CHECK((*box)->pending()->empty());
  const std::string file = dir + "/receipts.pending";
  CHECK(std::filesystem::file_size(file) == 0);  // cut, not deleted: no new file per job

  // A removal in the middle leaves a zeroed slot that a later add does not disturb; the file is
  // cut back once no receipt follows.
  REQUIRE((*box)->add(make(p1, 3)).is_ok());
  REQUIRE((*box)->add(make(p1, 4)).is_ok());
  REQUIRE((*box)->add(make(p1, 5)).is_ok());
  REQUIRE((*box)->remove(job_id{4}, p1.public_key).is_ok());
  CHECK(std::filesystem::file_size(file) == 3 * ledger::receipt_size);
  REQUIRE((*box)->add(make(p1, 6)).is_ok());
  list = (*box)->pending();
  REQUIRE(list->size() == 3);
  CHECK(list->at(0).job_id[0] == 3);
  CHECK(list->at(1).job_id[0] == 5);
  CHECK(list->at(2).job_id[0] == 6);
  REQUIRE((*box)->remove(job_id{6}, p1.public_key).is_ok());
  REQUIRE((*box)->remove(job_id{5}, p1.public_key).is_ok());
  CHECK(std::filesystem::file_size(file) == ledger::receipt_size);  // job 3 only

  // An append torn by a crash (part of a slot at the end) is overwritten by the next add.
  {
    std::ofstream torn(file, std::ios::app | std::ios::binary);
    torn << std::string(100, 'x');
  }
  CHECK((*box)->pending()->size() == 1);
  REQUIRE((*box)->add(make(p2, 7)).is_ok());
  CHECK(std::filesystem::file_size(file) == 2 * ledger::receipt_size);
  list = (*box)->pending();
  REQUIRE(list->size() == 2);
  CHECK(list->at(1).job_id[0] == 7);

  // Many removed slots before a receipt that waits: the next add writes the file anew.
  for (uint8_t job = 10; job < 210; ++job) REQUIRE((*box)->add(make(p1, job)).is_ok());
  for (uint8_t job = 10; job < 209; ++job) REQUIRE((*box)->remove(job_id{job}, p1.public_key).is_ok());
  CHECK(std::filesystem::file_size(file) == 202 * ledger::receipt_size);
  REQUIRE((*box)->add(make(p2, 8)).is_ok());
  CHECK(std::filesystem::file_size(file) == 4 * ledger::receipt_size);
  list = (*box)->pending();
  REQUIRE(list->size() == 4);
  CHECK(list->at(2).job_id[0] == 209);
  CHECK(list->at(3).job_id[0] == 8);
  std::filesystem::remove_all(dir);
}

TEST_CASE("adds from many threads at once share writes and lose none", "[grid][receipts]") {
  std::string dir = temp_dir("box-threads");
  keypair client = keypair::generate(), p1 = keypair::generate();
  auto make = [&](int job) { return paid_receipt(client, p1, job); };
  constexpr int kThreads = 8, kEach = 30;
  std::vector<ledger::receipt> rs;
  for (int i = 0; i < kThreads * kEach; ++i) rs.push_back(make(i));
  auto box = receipt_outbox::open(dir);
  REQUIRE(box.has_value());
  std::atomic<int> failed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int j = 0; j < kEach; ++j) {
        const ledger::receipt& r = rs[t * kEach + j];
        if (!(*box)->add(r).is_ok()) ++failed;
        // Every other receipt is answered (removed) at once, while other threads add.
        if (j % 2 == 1 && !(*box)->remove(r.job_id, r.provider_key).is_ok()) ++failed;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(failed == 0);
  auto list = (*box)->pending();
  REQUIRE(list.has_value());
  std::set<int> got;
  for (const auto& r : *list) got.insert(r.job_id[0] | (r.job_id[1] << 8));
  std::set<int> want;
  for (int t = 0; t < kThreads; ++t)
    for (int j = 0; j < kEach; j += 2) want.insert(t * kEach + j);
  CHECK(got == want);
  CHECK(list->size() == want.size());
  std::filesystem::remove_all(dir);
}

TEST_CASE("two outboxes on one folder see each other's adds, removals and rewrites", "[grid][receipts]") {
  std::string dir = temp_dir("box-two");
  keypair client = keypair::generate(), p1 = keypair::generate();
  auto make = [&](int job) { return paid_receipt(client, p1, job); };
  auto a = receipt_outbox::open(dir), b = receipt_outbox::open(dir);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  REQUIRE((*a)->add(make(1)).is_ok());
  REQUIRE((*b)->pending()->size() == 1);
  // b fills and empties the file until its next add writes it anew (a new file renamed over
  // the one a still has open).
  for (int job = 10; job < 200; ++job) REQUIRE((*b)->add(make(job)).is_ok());
  for (int job = 10; job < 199; ++job) REQUIRE((*b)->remove(job_id{static_cast<uint8_t>(job)}, p1.public_key).is_ok());
  REQUIRE((*b)->add(make(2)).is_ok());  // 192 slots for 3 receipts: written anew
  CHECK(std::filesystem::file_size(dir + "/receipts.pending") == 3 * ledger::receipt_size);
  auto seen = (*a)->pending();
  REQUIRE(seen.has_value());
  REQUIRE(seen->size() == 3);
  CHECK(seen->at(1).job_id[0] == 199);
  CHECK(seen->at(2).job_id[0] == 2);
  REQUIRE((*a)->remove(job_id{1}, p1.public_key).is_ok());
  REQUIRE((*a)->add(make(3)).is_ok());
  auto list = (*b)->pending();
  REQUIRE(list.has_value());
  REQUIRE(list->size() == 3);
  CHECK(list->at(0).job_id[0] == 199);
  CHECK(list->at(1).job_id[0] == 2);
  CHECK(list->at(2).job_id[0] == 3);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a provider serves a client that does not countersign only up to its credit", "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("credit");
  provider_box p(keypair::generate(), dir, 2);
  keypair client = keypair::generate(), other = keypair::generate();
  ledger::receipt first = p.run(client, 1);
  p.run(client, 2);
  CHECK(p.core->unpaid_jobs(client.public_key) == 2);
  bid_reply refused = p.bid(client, 3);
  CHECK_FALSE(refused.accepted);
  CHECK(refused.detail.find("unpaid") != std::string::npos);
  CHECK(p.bid(other, 4).accepted);  // other clients are not affected
  // Paying one job makes room for one more.
  REQUIRE(p.core->accept_receipt(countersigned(first, client)).is_ok());
  CHECK(p.core->unpaid_jobs(client.public_key) == 1);
  CHECK(p.bid(client, 3).accepted);
  // A receipt the client altered, or did not sign, is refused for good.
  ledger::receipt altered = countersigned(p.run(client, 5), client);
  altered.price_micros *= 10;
  status st = p.core->accept_receipt(altered);
  CHECK(st.kind() == error_kind::invalid_input);
  CHECK(receipt_answer_of(st) == net::receipt_status::rejected);
  CHECK(p.ledger_entries() == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a provider's unpaid-job counts survive a restart", "[grid][receipts][admission]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("unpaid-restart");
  provider_box p(keypair::generate(), dir, 2);
  keypair client = keypair::generate();
  ledger::receipt first = p.run(client, 1);
  p.run(client, 2);
  CHECK_FALSE(p.bid(client, 3).accepted);
  p.core.reset();  // the provider stops (or crashes: every change is written as it happens)
  p.start(2);
  CHECK(p.core->unpaid_jobs(client.public_key) == 2);
  bid_reply refused = p.bid(client, 3);
  CHECK_FALSE(refused.accepted);
  CHECK(refused.detail.find("unpaid") != std::string::npos);
  // Paid after the restart (the client redelivers), and that survives the next restart too.
  REQUIRE(p.core->accept_receipt(countersigned(first, client)).is_ok());
  p.core.reset();
  p.start(2);
  CHECK(p.core->unpaid_jobs(client.public_key) == 1);
  CHECK(p.bid(client, 3).accepted);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a restarted provider records a receipt it issued before, once", "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("restart");
  keypair id = keypair::generate(), client = keypair::generate();
  provider_box p(id, dir);
  ledger::receipt r = countersigned(p.run(client, 7), client);
  p.core.reset();  // the provider dies before the receipt arrives
  p.start();
  REQUIRE(p.core->accept_receipt(r).is_ok());
  REQUIRE(p.core->accept_receipt(r).is_ok());  // redelivered (the answer was lost): still one entry
  CHECK(p.ledger_entries() == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a provider that cannot write its ledger takes no jobs until it can, and says so", "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("full");
  keypair client = keypair::generate();
  provider_box p(keypair::generate(), dir);
  ledger::receipt r = countersigned(p.run(client, 1), client);
  status st;
  bid_reply during;
  without_file_room([&] {
    st = p.core->accept_receipt(r);
    during = p.bid(client, 2);
  });
  CHECK(st.kind() == error_kind::io);
  CHECK(receipt_answer_of(st) == net::receipt_status::retry_later);
  CHECK_FALSE(p.core->can_record_payments());
  CHECK_FALSE(during.accepted);
  CHECK(during.detail.find("cannot record payments") != std::string::npos);
  REQUIRE(p.log.size() == 1);
  CHECK(p.log[0].find("cannot record payments") != std::string::npos);
  CHECK(std::filesystem::file_size(dir + "/ledger.log") == 0);
  // The client sends the receipt again once there is room: recorded, and jobs are taken again.
  REQUIRE(p.core->accept_receipt(r).is_ok());
  CHECK(p.core->can_record_payments());
  CHECK(p.bid(client, 2).accepted);
  CHECK(p.ledger_entries() == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("every agreeing provider of a redundant job is paid, and pending receipts are sent again",
          "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("pay");
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  keypair client = keypair::generate();
  provider_box a(keypair::generate(), dir + "/a"), b(keypair::generate(), dir + "/b");
  std::vector<provider_handle> handles = {{spawn_provider(sys, a.core), a.id.public_key, "a"},
                                          {spawn_provider(sys, b.core), b.id.public_key, "b"}};
  auto led = ledger::ledger_file::open(dir + "/client");
  auto box = receipt_outbox::open(dir + "/client");
  REQUIRE(led.has_value());
  REQUIRE(box.has_value());
  // A receipt from an earlier run whose delivery never happened (the client died first).
  ledger::receipt earlier = countersigned(a.run(client, 99), client);
  REQUIRE((*led)->append(earlier).has_value());
  REQUIRE((*box)->add(earlier).is_ok());

  job_spec job;
  job.model_bytes = relu_model();
  job.model_hash = ledger::blake2b_256(*relu_model());
  job.gflops = 1;
  job.inputs = {tensor::from_vector<float>({2, 3}, {1, 2, 3, -4, 0.25f, -9})};
  client_options o;
  o.redundancy = 2;
  o.outbox = box->get();
  auto r = run_job(sys, handles, job, o, client, nullptr, led->get(), nullptr, [](const std::string&) {});
  REQUIRE(r.has_value());
  REQUIRE(r->providers.size() == 2);
  CHECK(r->providers[0].paid);
  CHECK(r->providers[1].paid);
  CHECK(a.ledger_entries() == 2);  // the earlier receipt and this job's
  CHECK(b.ledger_entries() == 1);
  auto mine = ledger::read_entries((*led)->path(), nullptr);
  REQUIRE(mine.has_value());
  CHECK(mine->size() == 3);
  CHECK(ledger::verify_entries(*mine).is_ok());
  CHECK((*box)->pending()->empty());
  CHECK(a.core->unpaid_jobs(client.public_key) == 0);
  for (auto& h : handles) caf::anon_send_exit(h.actor, caf::exit_reason::user_shutdown);
  a.core->stop();
  b.core->stop();
  std::filesystem::remove_all(dir);
}

TEST_CASE("a provider refuses a receipt the client changed and countersigned again", "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("resigned");
  provider_box p(keypair::generate(), dir);
  keypair client = keypair::generate();
  ledger::receipt issued = p.run(client, 1);
  // The client's own signature is valid over the changed body; the provider's is not.
  ledger::receipt changed = issued;
  changed.price_micros += 1;
  status st = p.core->accept_receipt(countersigned(changed, client));
  CHECK(st.kind() == error_kind::invalid_input);
  CHECK(st.message().find("provider's signature") != std::string::npos);
  CHECK(p.ledger_entries() == 0);
  // The receipt as it was issued is still taken.
  REQUIRE(p.core->accept_receipt(countersigned(issued, client)).is_ok());
  CHECK(p.ledger_entries() == 1);
  std::filesystem::remove_all(dir);
}

namespace {

// A client's data dir with a ledger: each receipt is added to the outbox, then appended to the
// ledger (the client's order).
struct client_dir {
  std::string dir;
  keypair me = keypair::generate();
  std::unique_ptr<ledger::ledger_file> led;
  explicit client_dir(const std::string& name) : dir(temp_dir(name)) {
    auto l = ledger::ledger_file::open(dir);
    REQUIRE(l.has_value());
    led = std::move(l).value();
  }
  ~client_dir() {
    led.reset();
    std::filesystem::remove_all(dir);
  }
  std::unique_ptr<receipt_outbox> open_box() {
    auto b = receipt_outbox::open(dir, &me.public_key);
    REQUIRE(b.has_value());
    return std::move(b).value();
  }
  void pay(receipt_outbox& box, const ledger::receipt& r) {
    REQUIRE(box.add(r).is_ok());
    REQUIRE(led->append(r).has_value());
  }
  // What a crash does to adds that no sync covered: the object is never closed, and the
  // pending file loses them.
  void crash_losing_adds(std::unique_ptr<receipt_outbox> box) {
    (void)box.release();
    lose_pending_file();
  }
  void lose_pending_file() { std::filesystem::remove(dir + "/receipts.pending"); }
  // Writes receipts.mark as the outbox does (the position, then the position xor its constant).
  void set_mark(uint64_t at) {
    std::string bytes(16, '\0');
    const uint64_t check = at ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 8; ++i) {
      bytes[i] = static_cast<char>((at >> (8 * i)) & 0xff);
      bytes[8 + i] = static_cast<char>((check >> (8 * i)) & 0xff);
    }
    std::ofstream(dir + "/receipts.mark", std::ios::binary | std::ios::trunc) << bytes;
  }
  std::vector<ledger::receipt> list(receipt_outbox& box) {
    auto l = box.pending();
    REQUIRE(l.has_value());
    return std::move(l).value();
  }
  size_t pending(receipt_outbox& box) { return list(box).size(); }
};

}  // namespace

TEST_CASE("an outbox opened with the client's key finds again the receipts a crash cut from it", "[grid][receipts]") {
  client_dir c("deferred");
  keypair p = keypair::generate();
  auto box = c.open_box();  // first use: the mark is made at the ledger's end
  CHECK(std::filesystem::exists(c.dir + "/receipts.mark"));
  for (int j = 1; j <= 3; ++j) c.pay(*box, paid_receipt(c.me, p, j));
  REQUIRE(box->remove(paid_receipt(c.me, p, 2).job_id, p.public_key).is_ok());  // job 2 was answered
  c.crash_losing_adds(std::move(box));
  auto again = c.open_box();
  // Every receipt after the mark comes back, job 2 too (its provider answers it as recorded).
  CHECK(c.pending(*again) == 3);
  again.reset();
  // Closed cleanly: the mark moved to the ledger's end, and nothing is found again.
  auto third = c.open_box();
  REQUIRE(third->remove(paid_receipt(c.me, p, 1).job_id, p.public_key).is_ok());
  CHECK(c.pending(*third) == 2);
  third.reset();
  CHECK(c.pending(*c.open_box()) == 2);
}

TEST_CASE("a checkpoint syncs the outbox and moves the mark past what it covers", "[grid][receipts]") {
  client_dir c("checkpoint");
  keypair p = keypair::generate();
  auto box = c.open_box();
  for (int j = 1; j <= 2; ++j) c.pay(*box, paid_receipt(c.me, p, j));
  REQUIRE(box->checkpoint().is_ok());
  c.pay(*box, paid_receipt(c.me, p, 3));
  c.crash_losing_adds(std::move(box));  // (a synced file is not lost; this shows where the mark stands)
  auto again = c.open_box();
  auto list = c.list(*again);
  REQUIRE(list.size() == 1);
  CHECK(list[0].job_id == paid_receipt(c.me, p, 3).job_id);
  again.reset();
  // Every checkpoint_every adds make a checkpoint of their own.
  auto fourth = c.open_box();
  for (size_t j = 0; j < receipt_outbox::checkpoint_every; ++j) c.pay(*fourth, paid_receipt(c.me, p, 100 + static_cast<int>(j)));
  c.crash_losing_adds(std::move(fourth));
  CHECK(c.pending(*c.open_box()) == 1);  // the last receipt's ledger entry came after the checkpoint its add made
}

TEST_CASE("reconciling takes only this client's payment receipts from the ledger", "[grid][receipts]") {
  client_dir c("mine");
  keypair p = keypair::generate(), other = keypair::generate();
  // Receipts written before the first keyed open are not looked for (every add was synced then).
  REQUIRE(c.led->append(paid_receipt(c.me, p, 1)).has_value());
  auto box = c.open_box();
  REQUIRE(c.led->append(paid_receipt(other, p, 2)).has_value());   // another client's
  REQUIRE(c.led->append(paid_receipt(p, c.me, 3)).has_value());    // earned here as a provider
  ledger::receipt dispute = paid_receipt(c.me, p, 4);
  dispute.kind = ledger::receipt_kind::dispute;
  ledger::sign_as_provider(dispute, p.secret_key);
  ledger::sign_as_client(dispute, c.me.secret_key);
  REQUIRE(c.led->append(dispute).has_value());
  c.pay(*box, paid_receipt(c.me, p, 5));
  c.crash_losing_adds(std::move(box));
  auto again = c.open_box();
  auto list = c.list(*again);
  REQUIRE(list.size() == 1);
  CHECK(list[0].job_id == paid_receipt(c.me, p, 5).job_id);
}

TEST_CASE("a mark that is damaged or not at a record's start is read safely", "[grid][receipts]") {
  client_dir c("badmark");
  keypair p = keypair::generate();
  auto box = c.open_box();
  for (int j = 1; j <= 3; ++j) c.pay(*box, paid_receipt(c.me, p, j));
  c.crash_losing_adds(std::move(box));
  SECTION("damaged: the whole ledger is read") {
    std::ofstream(c.dir + "/receipts.mark", std::ios::binary | std::ios::trunc) << "garbage";
    CHECK(c.pending(*c.open_box()) == 3);
  }
  SECTION("inside the second record: from that record on") {
    c.set_mark(ledger::record_bytes() + 10);
    CHECK(c.pending(*c.open_box()) == 2);
  }
  SECTION("past the ledger's end (the ledger was cut back): nothing, and the mark comes back") {
    c.set_mark(uint64_t{1} << 30);
    CHECK(c.pending(*c.open_box()) == 0);
    c.pay(*c.open_box(), paid_receipt(c.me, p, 4));
    c.lose_pending_file();  // the clean close moved the mark to the end: nothing found again
    CHECK(c.pending(*c.open_box()) == 0);
  }
}

TEST_CASE("receipts that the client's ledger does not hold are not sent again", "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("orphan");
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  keypair client = keypair::generate();
  provider_box a(keypair::generate(), dir + "/a");
  std::vector<provider_handle> handles = {{spawn_provider(sys, a.core), a.id.public_key, "a"}};
  auto led = ledger::ledger_file::open(dir + "/client");
  REQUIRE(led.has_value());
  auto box = receipt_outbox::open(dir + "/client", &client.public_key);
  REQUIRE(box.has_value());
  ledger::receipt kept = countersigned(a.run(client, 1), client);
  REQUIRE((*box)->add(kept).is_ok());
  REQUIRE((*led)->append(kept).has_value());
  // Added, and then the client died before its ledger took it: never paid for, never sent.
  ledger::receipt orphan = countersigned(a.run(client, 2), client);
  REQUIRE((*box)->add(orphan).is_ok());
  CHECK(redeliver_receipts(sys, handles, **box, 16, std::chrono::seconds(5), [](const std::string&) {}, led->get()) == 1);
  CHECK(a.ledger_entries() == 1);
  CHECK(a.core->unpaid_jobs(client.public_key) == 1);
  auto left = (*box)->pending();
  REQUIRE(left.has_value());
  REQUIRE(left->size() == 1);
  CHECK(left->at(0).job_id == orphan.job_id);
  for (auto& h : handles) caf::anon_send_exit(h.actor, caf::exit_reason::user_shutdown);
  a.core->stop();
  std::filesystem::remove_all(dir);
}

namespace {

// A client's data dir with its outbox, an actor system and a pay recorder for them.
struct recorder_dir : client_dir {
  std::unique_ptr<receipt_outbox> box = open_box();
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<std::string> notes;
  std::unique_ptr<pay_recorder> rec;
  explicit recorder_dir(const std::string& name) : client_dir(name) {
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    rec = std::make_unique<pay_recorder>(*sys, led.get(), box.get(), [this](const std::string& s) { notes.push_back(s); });
  }
  ~recorder_dir() {
    rec.reset();  // answers what was asked, then stops
    sys.reset();
  }
  pay_record_ptr record(const ledger::receipt& r) {
    auto p = std::make_shared<pay_record>();
    p->receipt = r;
    return p;
  }
};

}  // namespace

TEST_CASE("the pay recorder records the receipts of jobs that pay together, each answered on its own", "[grid][receipts]") {
  recorder_dir c("recorder");
  keypair p1 = keypair::generate(), p2 = keypair::generate();
  std::vector<pay_answer_ptr> answers;
  {
    caf::scoped_actor self{*c.sys};
    // 120 jobs ask at once (several groups), and job 2 of p1 a second time.
    std::vector<pay_record_ptr> asked;
    for (int i = 0; i < 120; ++i) asked.push_back(c.record(paid_receipt(c.me, i % 2 ? p2 : p1, i)));
    asked.push_back(asked[2]);
    for (const auto& a : asked) self->send(c.rec->actor(), pay_record_atom::value, a);
    for (size_t i = 0; i < asked.size(); ++i)
      self->receive([&](const pay_answer_ptr& st) { answers.push_back(st); },
                    caf::after(std::chrono::seconds(30)) >> [&] { FAIL("no answer from the recorder"); });
  }
  REQUIRE(answers.size() == 121);
  size_t ok = 0, twice = 0;
  for (const auto& a : answers) {
    REQUIRE(a);
    if (a->is_ok()) ++ok;
    else if (a->kind() == error_kind::invalid_input) ++twice;
  }
  CHECK(ok == 120);
  CHECK(twice == 1);
  CHECK(c.notes.empty());
  auto entries = ledger::read_entries(c.dir + "/ledger.log", nullptr);
  REQUIRE(entries.has_value());
  CHECK(entries->size() == 120);
  CHECK(ledger::verify_entries(*entries).is_ok());
  // Every receipt waits in the outbox for its provider's answer, the repeated one once.
  CHECK(c.pending(*c.box) == 120);
}

TEST_CASE("a receipt the ledger cannot take is answered with its error and leaves the outbox", "[grid][receipts]") {
  recorder_dir c("recorder-full");
  pay_answer_ptr answer;
  {
    caf::scoped_actor self{*c.sys};
    auto asked = c.record(paid_receipt(c.me, keypair::generate(), 1));
    without_file_room([&] {
      self->request(c.rec->actor(), std::chrono::seconds(30), pay_record_atom::value, asked)
          .receive([&](const pay_answer_ptr& st) { answer = st; }, [&](caf::error&) {});
    });
  }
  REQUIRE(answer);
  CHECK(answer->kind() == error_kind::io);
  REQUIRE(c.notes.size() == 1);  // the outbox could not keep it either
  CHECK(c.notes[0].find("cannot keep the receipt") != std::string::npos);
  CHECK(c.pending(*c.box) == 0);
  CHECK(std::filesystem::file_size(c.dir + "/ledger.log") == 0);
}

TEST_CASE("a provider records a group of receipts together and answers each on its own", "[grid][receipts]") {
  if (!have_cpu()) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = temp_dir("group");
  keypair client = keypair::generate();
  provider_box p(keypair::generate(), dir, 8);
  ledger::receipt r1 = countersigned(p.run(client, 1), client);
  ledger::receipt r2 = countersigned(p.run(client, 2), client);
  ledger::receipt r3 = countersigned(p.run(client, 3), client);
  ledger::receipt altered = countersigned(p.run(client, 4), client);
  altered.price_micros *= 10;
  CHECK(p.core->unpaid_jobs(client.public_key) == 4);
  // r2 delivered twice in one group (a redelivery racing the first): one entry, both answered OK.
  auto st = p.core->accept_receipts({&r1, &r2, &r2, &altered, &r3});
  REQUIRE(st.size() == 5);
  CHECK(st[0].is_ok());
  CHECK(st[1].is_ok());
  CHECK(st[2].is_ok());
  CHECK(st[3].kind() == error_kind::invalid_input);
  CHECK(st[4].is_ok());
  CHECK(p.ledger_entries() == 3);
  CHECK(p.core->unpaid_jobs(client.public_key) == 1);  // the altered one is still owed
  CHECK(p.core->accept_receipts({}).empty());
  std::filesystem::remove_all(dir);
}
