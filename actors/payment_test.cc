// The provider's payment hooks (actors/payment.h) without a chain: bids carry the gate's terms,
// a job whose payment the gate refuses never runs, and the ledger entry of a paid job carries
// the voucher that paid it.
#include <catch2/catch.hpp>

#include <sodium.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <thread>

#include <caf/all.hpp>

#include "actors/payment.h"
#include "actors/provider.h"
#include "actors/test_models.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {

// Terms that ask the bid's price in nano-units.
ledger::chain_terms terms_at(double price) {
  ledger::chain_terms t;
  t.price = ledger::word_of(static_cast<unsigned __int128>(price * 1e9));
  return t;
}

struct fake_gate : payment_gate {
  bool refuse = false;
  int admitted = 0;
  ledger::chain_terms terms(double price) override { return terms_at(price); }
  status admit(const execute_request& req) override {
    if (refuse || !req.voucher) return invalid_input("channel 3's deposit does not cover it");
    ++admitted;
    last = *req.voucher;
    return status::ok();
  }
  std::optional<ledger::voucher_claim> claim_for(const job_id&) override { return last; }
  ledger::voucher_claim last;
};

// Takes vouchers only in the order they were made (as a chain gate does: a voucher below the
// last one taken is stale); a check takes a varying time, as a chain read or a disk write does.
struct in_order_gate : payment_gate {
  std::mutex mu;
  unsigned __int128 last = 0;
  std::vector<unsigned> order;
  int stale = 0;
  ledger::chain_terms terms(double price) override { return terms_at(price); }
  status admit(const execute_request& req) override {
    if (!req.voucher) return invalid_input("no voucher");
    unsigned __int128 nonce = ledger::word_value(req.voucher->nonce);
    std::this_thread::sleep_for(std::chrono::microseconds(700 * static_cast<int>(nonce % 3)));
    std::lock_guard<std::mutex> l(mu);
    if (nonce <= last) {
      ++stale;
      return invalid_input("replayed or stale");
    }
    last = nonce;
    order.push_back(static_cast<unsigned>(nonce));
    return status::ok();
  }
  std::optional<ledger::voucher_claim> claim_for(const job_id&) override { return std::nullopt; }
};

// A provider's model cache, ledger and options (one CPU thread, paid through `gate`) in a
// fresh folder `dir`.
struct paid_provider {
  paid_provider(const std::string& dir, std::shared_ptr<payment_gate> gate) {
    std::filesystem::remove_all(dir);
    cache = std::shared_ptr<model_cache>(model_cache::open(dir + "/models", 1 << 24).value());
    ledger = std::shared_ptr<ledger::ledger_file>(ledger::ledger_file::open(dir).value());
    options.device = "cpu";
    options.threads = 1;
    options.payment = std::move(gate);
  }
  std::shared_ptr<model_cache> cache;
  std::shared_ptr<ledger::ledger_file> ledger;
  provider_options options;
};

}  // namespace

TEST_CASE("a provider with several slots takes the vouchers of jobs that arrive together in their order", "[grid][voucher]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = (std::filesystem::temp_directory_path() / ("gg-pay-order-" + std::to_string(::getpid()))).string();
  auto gate = std::make_shared<in_order_gate>();
  paid_provider pp(dir, gate);
  pp.options.slots = 4;
  pp.options.unpaid_credit = 100;
  keypair provider = keypair::generate(), client = keypair::generate();
  auto core = std::make_shared<provider_core>(provider, pp.cache, pp.options, pp.ledger);
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  provider_actor shell = spawn_provider(sys, core);

  std::string model = gpugrid::grid::testing::add_relu_model();
  auto model_bytes = std::make_shared<const std::string>(model);
  bid_request br;
  br.client = client.public_key;
  br.model_hash = ledger::blake2b_256(model);
  br.model_bytes = static_cast<int64_t>(model.size());
  br.gflops = 1e-6;
  const double price = core->bid(br).price;
  const int n = 12;
  caf::scoped_actor self{sys};
  for (int k = 1; k <= n; ++k) {  // made and sent in nonce order, all before any answer
    auto req = std::make_shared<execute_request>();
    req->job[0] = static_cast<uint8_t>(k);
    req->client = client.public_key;
    req->model_hash = br.model_hash;
    req->model_bytes = model_bytes;
    req->inputs = {tensor::zeros(dtype::f32, {2, 3})};
    req->input_digest = tensors_digest(req->inputs);
    req->price = price;
    ledger::voucher_claim v;
    v.amount = ledger::word_of(static_cast<unsigned __int128>(k) * 1000);
    v.nonce = ledger::word_of(static_cast<unsigned __int128>(k));
    req->voucher = v;
    self->send(shell, exec_atom::value, execute_request_ptr(req));
  }
  int ok = 0;
  for (int k = 0; k < n; ++k)
    self->receive([&](const execute_result_ptr& r) { ok += r->ok; }, caf::after(std::chrono::seconds(30)) >> [] {});
  CHECK(ok == n);
  CHECK(gate->stale == 0);
  std::vector<unsigned> want(n);
  std::iota(want.begin(), want.end(), 1u);
  CHECK(gate->order == want);
  core->stop();
  caf::anon_send_exit(shell, caf::exit_reason::user_shutdown);
  std::filesystem::remove_all(dir);
}

TEST_CASE("payment hooks: terms in bids, refused jobs do not run, vouchers in the ledger", "[grid][voucher]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  std::string dir = (std::filesystem::temp_directory_path() / ("gg-pay-" + std::to_string(::getpid()))).string();
  auto gate = std::make_shared<fake_gate>();
  paid_provider pp(dir, gate);
  keypair provider = keypair::generate(), client = keypair::generate();
  provider_core core(provider, pp.cache, pp.options, pp.ledger);

  std::string model = gpugrid::grid::testing::add_relu_model();
  bid_request br;
  br.client = client.public_key;
  br.model_hash = ledger::blake2b_256(model);
  br.model_bytes = static_cast<int64_t>(model.size());
  br.gflops = 1e-6;
  bid_reply bid = core.bid(br);
  REQUIRE(bid.accepted);
  REQUIRE(bid.terms);
  CHECK(ledger::word_value(bid.terms->price) == static_cast<unsigned __int128>(bid.price * 1e9));

  execute_request req;
  req.job[0] = 1;
  req.client = client.public_key;
  req.model_hash = br.model_hash;
  req.model_bytes = std::make_shared<const std::string>(model);
  req.inputs = {tensor::zeros(dtype::f32, {2, 3})};
  req.input_digest = tensors_digest(req.inputs);
  req.price = bid.price;
  auto unpaid = core.execute(req);  // no voucher
  CHECK_FALSE(unpaid.ok);
  CHECK(unpaid.error.find("payment refused: channel 3's deposit") != std::string::npos);
  CHECK_FALSE(unpaid.error_is_input);
  CHECK(core.counters().jobs == 0);

  ledger::voucher_claim v;
  v.amount = ledger::word_of(12345);
  v.nonce = ledger::word_of(1);
  req.voucher = v;
  auto paid = core.execute(req);
  REQUIRE(paid.ok);
  CHECK(gate->admitted == 1);
  ledger::receipt r = paid.receipt;
  ledger::sign_as_client(r, client.secret_key);
  REQUIRE(core.accept_receipt(r).is_ok());
  auto entries = ledger::read_entries(pp.ledger->path(), nullptr).value();
  REQUIRE(entries.size() == 1);
  REQUIRE(entries[0].claim);
  CHECK(*entries[0].claim == v);
  std::filesystem::remove_all(dir);
}
