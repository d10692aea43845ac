// Dynamic batching: the queue (flush on max batch and on timeout, incompatible jobs kept
// apart), merging and splitting tensors, the fallback to single runs, and the provider's
// merged executions (per-job results and receipts equal to running each job alone).
#include <catch2/catch.hpp>

#include <caf/all.hpp>

#include <map>
#include <thread>

#include "actors/atoms.h"
#include "actors/batcher.h"
#include "actors/provider.h"
#include "actors/test_models.h"
#include "engine/onnx_loader.h"
#include "kernels/cpu/cpu_ops.h"
#include "ledger/receipt.h"

using namespace gpugrid;
using namespace gpugrid::grid;
using clk = std::chrono::steady_clock;
using std::chrono::microseconds;

namespace {

tensor rows_of(int64_t rows, int64_t cols, float start) {
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + static_cast<float>(i);
  return tensor::from_vector<float>({rows, cols}, v);
}

std::vector<float> values(const tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

batch_signature sig(int64_t rows, int64_t cols, dtype type = dtype::f32) {
  tensor t = tensor::zeros(type, {rows, cols});
  return *batch_signature_of(digest32{}, {t});
}

}  // namespace

TEST_CASE("batch queue: a group leaves when it reaches max batch", "[grid][batch]") {
  batch_queue<int> q({3, 1000000});
  auto t = clk::now();
  q.push(sig(1, 4), 1, t);
  q.push(sig(2, 4), 2, t);
  CHECK_FALSE(q.pop_ready(t));
  q.push(sig(1, 4), 3, t);
  q.push(sig(1, 4), 4, t);  // a fourth waits for the next batch
  auto g = q.pop_ready(t);
  REQUIRE(g);
  CHECK(*g == std::vector<int>{1, 2, 3});
  CHECK(q.size() == 1);
  CHECK_FALSE(q.pop_ready(t));
  CHECK(q.next_deadline() == t + std::chrono::seconds(1));
}

TEST_CASE("batch queue: a group leaves when its oldest job has waited max wait", "[grid][batch]") {
  batch_queue<int> q({8, 500});
  auto t = clk::now();
  q.push(sig(1, 4), 1, t);
  q.push(sig(1, 4), 2, t + microseconds(200));
  CHECK_FALSE(q.pop_ready(t + microseconds(499)));
  REQUIRE(q.next_deadline());
  CHECK(*q.next_deadline() == t + microseconds(500));
  auto g = q.pop_ready(t + microseconds(500));
  REQUIRE(g);
  CHECK(*g == std::vector<int>{1, 2});
  CHECK(q.empty());
  CHECK_FALSE(q.next_deadline());
}

TEST_CASE("batch queue: incompatible jobs are not merged and unbatchable jobs go at once", "[grid][batch]") {
  CHECK(sig(1, 4) == sig(7, 4));                    // only the first dim may differ
  CHECK_FALSE(sig(1, 4) == sig(1, 5));              // other dims
  CHECK_FALSE(sig(1, 4) == sig(1, 4, dtype::i64));  // dtypes
  digest32 other{};
  other[0] = 1;
  CHECK_FALSE(*batch_signature_of(other, {rows_of(1, 4, 0)}) == sig(1, 4));  // models
  CHECK_FALSE(batch_signature_of(digest32{}, {tensor::scalar<float>(1)}));   // no batch dim
  CHECK_FALSE(batch_signature_of(digest32{}, {rows_of(2, 4, 0), rows_of(3, 4, 0)}));  // rows differ within a job
  CHECK_FALSE(batch_signature_of(digest32{}, {tensor::zeros(dtype::f32, {0, 4})}));   // no rows

  batch_queue<int> q({4, 100});
  auto t = clk::now();
  q.push(sig(1, 4), 1, t);
  q.push(sig(1, 5), 2, t);
  q.push(std::nullopt, 3, t + microseconds(10));
  auto first = q.pop_ready(t + microseconds(10));
  REQUIRE(first);
  CHECK(*first == std::vector<int>{3});  // no signature: alone, at once
  auto a = q.pop_ready(t + microseconds(100));
  auto b = q.pop_ready(t + microseconds(100));
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->size() == 1);
  CHECK(b->size() == 1);
  CHECK((*a)[0] + (*b)[0] == 3);

  batch_queue<int> off({1, 100});  // --batch-max 1: every job alone at once
  off.push(sig(1, 4), 1, t);
  off.push(sig(1, 4), 2, t);
  CHECK(off.pop_ready(t)->size() == 1);
  CHECK(off.pop_ready(t)->size() == 1);
}

TEST_CASE("merged inputs split back into each job's rows", "[grid][batch]") {
  std::vector<tensor> a{rows_of(1, 3, 0)}, b{rows_of(2, 3, 100)}, c{rows_of(3, 3, 200)};
  auto merged = merge_inputs({&a, &b, &c});
  REQUIRE(merged);
  REQUIRE(merged->size() == 1);
  CHECK((*merged)[0].shape() == shape_t{6, 3});
  CHECK((*merged)[0].data<float>()[3] == 100.0f);
  CHECK((*merged)[0].data<float>()[9] == 200.0f);
  auto parts = split_outputs(*merged, {1, 2, 3});
  REQUIRE(parts);
  REQUIRE(parts->size() == 3);
  CHECK(values((*parts)[0][0]) == values(a[0]));
  CHECK(values((*parts)[1][0]) == values(b[0]));
  CHECK(values((*parts)[2][0]) == values(c[0]));
  CHECK((*parts)[2][0].shape() == shape_t{3, 3});
  // An output that does not follow the batch (a reduction over it) does not split.
  CHECK_FALSE(split_outputs({rows_of(1, 3, 0)}, {1, 2, 3}));
  CHECK_FALSE(split_outputs({tensor::scalar<float>(1)}, {1, 2}));
  std::vector<tensor> wide{rows_of(1, 4, 0)};
  CHECK_FALSE(merge_inputs({&a, &wide}));
}

TEST_CASE("a failed merged run is redone job by job, so a bad job fails alone", "[grid][batch]") {
  std::vector<tensor> good1{rows_of(1, 3, 0)}, bad{rows_of(1, 3, -50)}, good2{rows_of(2, 3, 10)};
  // A "model" that doubles its input and fails on negative values.
  auto run = [](const std::vector<tensor>& in) -> expected<std::vector<tensor>> {
    tensor out = in[0].clone();
    for (int64_t i = 0; i < out.numel(); ++i) {
      if (out.data<float>()[i] < 0) return invalid_input("negative input");
      out.data<float>()[i] *= 2;
    }
    return std::vector<tensor>{out};
  };
  std::vector<const std::vector<tensor>*> jobs{&good1, &bad, &good2};
  int merged_runs = 0;
  auto rep = run_batch(
      jobs, [&](const std::vector<tensor>& m) { ++merged_runs; return run(m); },
      [&](size_t k) { return run(*jobs[k]); });
  CHECK(merged_runs == 1);
  CHECK_FALSE(rep.merged);
  CHECK(rep.fell_back);
  REQUIRE(rep.results.size() == 3);
  REQUIRE(rep.results[0]);
  CHECK_FALSE(rep.results[1]);
  REQUIRE(rep.results[2]);
  CHECK((*rep.results[2])[0].data<float>()[5] == 30.0f);

  std::vector<const std::vector<tensor>*> fine{&good1, &good2};
  int singles = 0;
  auto ok = run_batch(fine, run, [&](size_t k) { ++singles; return run(*fine[k]); });
  CHECK(ok.merged);
  CHECK(singles == 0);
  REQUIRE(ok.results.size() == 2);
  CHECK((*ok.results[1])[0].shape() == shape_t{2, 3});
  CHECK(values((*ok.results[1])[0]) == std::vector<float>{20, 22, 24, 26, 28, 30});
}

TEST_CASE("a model allows batching only with a free first dim on every input and output", "[grid][batch]") {
  auto g = load_model_from_bytes(testing::add_relu_model(), "add_relu", {});
  REQUIRE(g);
  CHECK(model_allows_batching(**g));
  onnx::ModelProto m;
  m.ParseFromString(testing::add_relu_model());
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_value(1);
  m.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_value(1);
  auto fixed = load_model_from_bytes(m.SerializeAsString(), "fixed", {});
  REQUIRE(fixed);
  CHECK_FALSE(model_allows_batching(**fixed));
}

namespace {

std::shared_ptr<provider_core> batching_provider(int max_batch, int64_t wait_us, int slots = 1) {
  provider_options po;
  po.device = "cpu";
  po.threads = 1;
  po.slots = slots;
  po.price.price_per_gflop = 0.001;
  po.price.minimum = 0;
  po.batch = {max_batch, wait_us};
  po.unpaid_credit = 100;
  return std::make_shared<provider_core>(keypair::generate(), nullptr, po, nullptr);
}

std::shared_ptr<const execute_request> job(const std::string& model, const key32& client, tensor input, uint8_t tag) {
  auto r = std::make_shared<execute_request>();
  r->job[0] = tag;
  r->job[1] = 0x5a;
  r->client = client;
  r->model_hash = ledger::blake2b_256(model);
  r->model_bytes = std::make_shared<const std::string>(model);
  r->inputs = {std::move(input)};
  r->input_digest = tensors_digest(r->inputs);
  r->price = 1;
  r->started_ms = unix_ms();
  return r;
}

}  // namespace

TEST_CASE("a provider merges a group of jobs into one execution with per-job results and receipts", "[grid][batch]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  std::string model = testing::add_relu_model();
  key32 client = keypair::generate().public_key;
  auto core = batching_provider(8, 1000);
  auto single = batching_provider(1, 0);
  // A model's first run is metered, so it runs alone even inside a group.
  auto first = core->execute_group({job(model, client, rows_of(1, 3, -2), 1)});
  REQUIRE(first.size() == 1);
  REQUIRE(first[0].ok);
  CHECK(core->counters().batched_executions.load() == 0);

  std::vector<std::shared_ptr<const execute_request>> group{job(model, client, rows_of(1, 3, -1), 2),
                                                            job(model, client, rows_of(3, 3, -4), 3),
                                                            job(model, client, rows_of(2, 3, 5), 4)};
  auto bad = std::make_shared<execute_request>(*job(model, client, rows_of(1, 3, 0), 5));
  bad->input_digest[0] ^= 1;  // fails its own checks; the others still merge
  group.push_back(bad);
  auto results = core->execute_group(group);
  REQUIRE(results.size() == 4);
  CHECK(core->counters().batched_executions.load() == 1);
  CHECK(core->counters().batched_jobs.load() == 3);
  CHECK_FALSE(results[3].ok);
  CHECK(results[3].error_is_input);
  for (size_t k = 0; k < 3; ++k) {
    INFO("job " << k);
    REQUIRE(results[k].ok);
    auto alone = single->execute(*group[k]);
    REQUIRE(alone.ok);
    REQUIRE(results[k].outputs.size() == 1);
    CHECK(results[k].outputs[0].shape() == group[k]->inputs[0].shape());
    CHECK(values(results[k].outputs[0]) == values(alone.outputs[0]));
    CHECK(results[k].output_digest == alone.output_digest);
    CHECK(results[k].receipt.job_id == group[k]->job);
    CHECK(results[k].receipt.input_digest == group[k]->input_digest);
    CHECK(results[k].receipt.output_digest == results[k].output_digest);
    CHECK(ledger::verify_provider_signature(results[k].receipt).is_ok());
  }
  CHECK(core->unpaid_jobs(client) == 4);  // the first job and three merged ones, each its own receipt
}

namespace {

// A provider whose jobs tagged 0xEE (job[0]) take 300 ms before they run: it keeps a worker busy.
class slow_provider : public provider_core {
 public:
  using provider_core::provider_core;

 protected:
  status before_run(const execute_request& r) override {
    if (r.job[0] == 0xEE) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return status::ok();
  }
};

std::shared_ptr<provider_core> slow_batching_provider(int max_batch, int64_t wait_us, int slots) {
  provider_options po;
  po.device = "cpu";
  po.threads = 1;
  po.slots = slots;
  po.price.price_per_gflop = 0.001;
  po.price.minimum = 0;
  po.batch = {max_batch, wait_us};
  po.unpaid_credit = 100;
  return std::make_shared<slow_provider>(keypair::generate(), nullptr, po, nullptr);
}

std::vector<float> add_relu_of(const tensor& in) {
  const float bias[3] = {0.5f, -1.0f, 2.0f};
  std::vector<float> want;
  for (int64_t i = 0; i < in.numel(); ++i) want.push_back(std::max(0.0f, in.data<float>()[i] + bias[i % 3]));
  return want;
}

}  // namespace

TEST_CASE("the provider actor batches jobs that wait while it is busy, and answers each", "[grid][batch]") {
  if (!cpu::registry().find("", "Relu")) { WARN("CPU ops missing; skipping"); return; }
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  std::string model = testing::add_relu_model();
  key32 client = keypair::generate().public_key;
  auto core = slow_batching_provider(4, 100000, 2);
  provider_actor provider = spawn_provider(sys, core);
  caf::scoped_actor self{sys};
  auto send = [&](uint8_t tag, tensor in) {
    // An asynchronous send: the answer comes back as an ordinary message, so receive() sees it.
    self->send(provider, exec_atom::value, execute_request_ptr(job(model, client, std::move(in), tag)));
  };
  std::map<uint8_t, execute_result_ptr> got;
  auto collect = [&](int n) {
    for (int k = 0; k < n; ++k)
      self->receive([&](const execute_result_ptr& r) { got[r->job[0]] = r; },
                    caf::after(std::chrono::seconds(10)) >> [&] { FAIL("no answer within 10 s"); });
  };
  send(1, rows_of(1, 3, 0));  // the metered first run, on an idle provider: at once
  collect(1);
  REQUIRE(got[1]);
  REQUIRE(got[1]->ok);

  // One worker busy for 300 ms; a lone job on the other waits out max wait (100 ms), then runs.
  auto t0 = clk::now();
  send(0xEE, rows_of(1, 3, 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  send(2, rows_of(2, 3, -1));
  collect(1);
  auto waited = clk::now() - t0;
  REQUIRE(got[2]);
  CHECK(got[2]->ok);
  CHECK(waited >= std::chrono::milliseconds(100));
  CHECK(waited < std::chrono::milliseconds(290));  // before the busy worker is done
  CHECK(core->counters().batched_executions.load() == 0);

  // Four jobs while a worker is busy fill a batch: they leave at once, as one execution.
  collect(1);  // the slow job
  send(0xEE, rows_of(1, 3, 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto t1 = clk::now();
  for (uint8_t k = 0; k < 4; ++k) send(static_cast<uint8_t>(10 + k), rows_of(k + 1, 3, -3.0f * k));
  collect(4);
  CHECK(clk::now() - t1 < std::chrono::milliseconds(90));
  CHECK(core->counters().batched_executions.load() == 1);
  CHECK(core->counters().batched_jobs.load() == 4);
  for (uint8_t k = 0; k < 4; ++k) {
    INFO("job " << int(k));
    auto r = got[static_cast<uint8_t>(10 + k)];
    REQUIRE(r);
    REQUIRE(r->ok);
    CHECK(values(r->outputs[0]) == add_relu_of(rows_of(k + 1, 3, -3.0f * k)));
    CHECK(r->receipt.job_id == r->job);
  }
  collect(1);
  caf::anon_send_exit(provider, caf::exit_reason::user_shutdown);
}
