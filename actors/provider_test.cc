// The provider's own defences, without a network: job cost from the model itself, time limits,
// cancellation, the memory budget for loaded models, and models that reach outside themselves.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <thread>

#include "actors/provider.h"
#include "actors/test_models.h"
#include "actors/testing/faulty_provider.h"
#include "engine/tensor.h"
#include "kernels/cpu/cpu_ops.h"
#include "ledger/receipt.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {

struct provider_fixture {
  std::string dir;
  std::shared_ptr<model_cache> cache;
  std::shared_ptr<provider_core> core;

  explicit provider_fixture(provider_options po, const char* name,
                            gpugrid::grid::testing::fault f = gpugrid::grid::testing::fault::none) {
    dir = (std::filesystem::temp_directory_path() / (std::string("gg-prov-") + name + "-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir);
    auto c = model_cache::open(dir + "/models", 1 << 24);
    REQUIRE(c.has_value());
    cache = std::shared_ptr<model_cache>(std::move(c).value());
    po.device = "cpu";
    po.threads = 1;
    core = std::make_shared<gpugrid::grid::testing::faulty_provider>(keypair::generate(), cache, po, nullptr, f,
                                                                     std::chrono::milliseconds(5000));
  }
  ~provider_fixture() { std::filesystem::remove_all(dir); }
};

// add_relu with another bias: another model (another hash).
std::string variant(float bias) {
  std::string bytes = gpugrid::grid::testing::add_relu_model();
  onnx::ModelProto m;
  m.ParseFromString(bytes);
  m.mutable_graph()->mutable_initializer(0)->set_float_data(0, bias);
  return m.SerializeAsString();
}

execute_request job_for(const std::string& model, int64_t rows, double price, bool send_model = true) {
  execute_request r;
  r.job = job_id{};
  r.job[0] = static_cast<uint8_t>(rows);
  r.job[1] = static_cast<uint8_t>(price * 1000);
  r.model_hash = ledger::blake2b_256(model);
  if (send_model) r.model_bytes = std::make_shared<const std::string>(model);
  r.inputs = {tensor::zeros(dtype::f32, {rows, 3})};
  r.input_digest = tensors_digest(r.inputs);
  r.price = price;
  return r;
}

provider_options priced(double per_gflop) {
  provider_options po;
  po.price.price_per_gflop = per_gflop;
  po.price.minimum = 0;
  po.free_gflops = 0;
  return po;
}

}  // namespace

TEST_CASE("a job's cost comes from the model as run here, not from the client's claim", "[grid][provider]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  provider_fixture f(priced(1.0), "cost");
  std::string model = gpugrid::grid::testing::add_relu_model();
  // 1000 rows: Add and Relu, 3000 operations each (at least 3e-6 GFLOP). The client pays for 1e-6.
  auto cheap = job_for(model, 1000, 1e-6);
  auto r = f.core->execute(cheap);
  REQUIRE_FALSE(r.ok);
  CHECK_THAT(r.error, Catch::Contains("GFLOP it paid for"));
  // The provider learned a lower bound: a bid that claims almost nothing is priced from it.
  bid_request br;
  br.model_hash = cheap.model_hash;
  br.gflops = 1e-9;
  br.max_price = -1;
  auto bid = f.core->bid(br);
  REQUIRE(bid.accepted);
  CHECK(bid.price >= 3e-6 * (1 - 1e-9));
  // Paying what it costs runs it; then the exact cost is known and prices later bids.
  auto fair = job_for(model, 1000, 1e-5);
  auto ok = f.core->execute(fair);
  REQUIRE(ok.ok);
  REQUIRE(f.core->known_gflops(fair.model_hash).has_value());
  double cost = *f.core->known_gflops(fair.model_hash);
  CHECK(cost >= 3e-6);   // Add and Relu, or one fused node: 3000 to 6000 operations
  CHECK(cost <= 6e-6);
  CHECK(f.core->bid(br).price == Approx(cost));
  // An underpaying job of a model with a known cost is refused before it runs.
  auto under = job_for(model, 1000, 1e-6, false);
  auto refused = f.core->execute(under);
  REQUIRE_FALSE(refused.ok);
  CHECK_THAT(refused.error, Catch::Contains("costs"));
}

TEST_CASE("a job stops at its time limit and when its client goes away", "[grid][provider]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  SECTION("time limit") {
    provider_options po;
    po.min_job_ms = 0;
    po.max_job_ms = 0;
    provider_fixture f(po, "time");
    auto r = f.core->execute(job_for(gpugrid::grid::testing::add_relu_model(), 4, 1));
    REQUIRE_FALSE(r.ok);
    CHECK_THAT(r.error, Catch::Contains("time limit"));
  }
  SECTION("cancelled") {
    provider_fixture f(provider_options{}, "cancel", gpugrid::grid::testing::fault::slow);
    auto job = job_for(gpugrid::grid::testing::add_relu_model(), 4, 1);
    job.cancel = std::make_shared<std::atomic<bool>>(false);
    auto t0 = std::chrono::steady_clock::now();
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      job.cancel->store(true);
    });
    auto r = f.core->execute(job);
    canceller.join();
    REQUIRE_FALSE(r.ok);
    CHECK_THAT(r.error, Catch::Contains("cancelled"));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(3000));  // not the 5 s it would take
  }
}

TEST_CASE("loaded models stay within the memory budget, least recently used out first", "[grid][provider]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  std::string a = variant(0.5f), b = variant(1.5f), c = variant(2.5f);
  provider_options po;
  po.max_memory_bytes = static_cast<int64_t>(2 * a.size() + 10);  // room for two
  provider_fixture f(po, "memory");
  for (const std::string* m : {&a, &b, &c, &a}) {
    auto r = f.core->execute(job_for(*m, 2, 1));
    REQUIRE(r.ok);
    CHECK(f.core->resident_models() <= 2);
    CHECK(f.core->resident_bytes() <= po.max_memory_bytes);
  }
  // A model larger than the whole budget is declined at the bid.
  bid_request br;
  br.model_bytes = 3 * static_cast<int64_t>(a.size());
  br.max_price = -1;
  auto bid = f.core->bid(br);
  CHECK_FALSE(bid.accepted);
  CHECK(bid.reason == decline_reason::too_big);
}

TEST_CASE("a model cannot read another model of the cache through external data, nor learn its path",
          "[grid][provider]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  provider_fixture f(provider_options{}, "extdata");
  std::string victim = variant(7.0f);
  REQUIRE(f.core->execute(job_for(victim, 2, 1)).ok);  // now in the cache
  std::string victim_file = ledger::to_hex(ledger::blake2b_256(victim)) + ".onnx";
  REQUIRE(std::filesystem::exists(f.dir + "/models/" + victim_file));
  // The attacker's model takes its bias from the victim's file.
  onnx::ModelProto m;
  m.ParseFromString(gpugrid::grid::testing::add_relu_model());
  auto* init = m.mutable_graph()->mutable_initializer(0);
  init->clear_float_data();
  init->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* loc = init->add_external_data();
  loc->set_key("location");
  loc->set_value(victim_file);
  auto* len = init->add_external_data();
  len->set_key("length");
  len->set_value("12");
  std::string attack = m.SerializeAsString();
  auto sent = f.core->execute(job_for(attack, 2, 1));
  REQUIRE_FALSE(sent.ok);
  CHECK_THAT(sent.error, Catch::Contains("external data"));
  CHECK(sent.error.find(f.dir) == std::string::npos);
  // Planted in the cache by other means, it is still loaded without a folder to look in.
  REQUIRE(f.cache->put(ledger::blake2b_256(attack), attack).is_ok());
  auto cached = f.core->execute(job_for(attack, 2, 1, false));
  REQUIRE_FALSE(cached.ok);
  CHECK_THAT(cached.error, Catch::Contains("external data"));
  CHECK(cached.error.find(f.dir) == std::string::npos);
}
