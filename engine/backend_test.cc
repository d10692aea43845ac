#include <catch2/catch.hpp>

#include <cstring>

#include "engine/backend.h"
#include "engine/op_runner.h"
#include "engine/session.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;

TEST_CASE("device specs are validated", "[backend]") {
  CHECK(valid_device_spec("auto"));
  CHECK(valid_device_spec("cpu"));
  CHECK(valid_device_spec("cuda"));
  CHECK(valid_device_spec("cuda:1"));
  CHECK_FALSE(valid_device_spec("cuda:"));
  CHECK_FALSE(valid_device_spec("cuda:x"));
  CHECK_FALSE(valid_device_spec("gpu"));
}

TEST_CASE("without a usable GPU, device discovery is empty and says why", "[backend]") {
  std::string note;
  auto devices = cuda_devices(&note);
  if (!devices.empty()) {
    WARN("a CUDA device is present (" << devices[0].name << "); skipping the no-GPU checks");
    return;
  }
  CHECK_FALSE(note.empty());
  WARN("no CUDA device: " << note);
  auto dev = open_device("cuda");
  REQUIRE_FALSE(dev.has_value());
  CHECK(dev.error().message().find("not available") != std::string::npos);
}

namespace {

// A pretend device whose memory is host memory tagged as device memory: lets the placement
// and copy logic of the session be tested without a GPU.
int tf32_seen = -1;  // what the last run context was told about TF32 (-1: nothing)

class fake_run_context final : public run_context {
 public:
  void* native() override { return this; }
  void set_allow_tf32(bool on) override { tf32_seen = on ? 1 : 0; }
  status synchronize() override { return status::ok(); }
  status upload(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); return status::ok(); }
  status download(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); return status::ok(); }
  // No graph capture here (the default refuses it): sessions must fall back to launches.
};

int fake_kernel_runs = 0;

class fake_backend final : public device_backend {
 public:
  fake_backend() {
    info_.name = "fake";
    info_.id = "cuda:0";
    // Device kernels wrap the CPU ones but insist on device-tagged inputs.
    for (const char* op : {"Add", "Relu", "MatMul"}) {
      std::string name = op;
      ops_.add(name, [name](const node& n) -> expected<std::unique_ptr<kernel>> {
        auto inner = (*cpu::registry().find("", name))(n);
        if (!inner) return inner.error();
        struct wrap final : kernel {
          std::unique_ptr<kernel> k;
          status run(kernel_context& ctx) override {
            for (size_t i = 0; i < ctx.num_inputs(); ++i)
              if (ctx.input(i) && ctx.input(i)->device() != device_kind::cuda) return ctx.fail("input {} is not on the device", i);
            ++fake_kernel_runs;
            // The CPU kernel sees host-tagged views of the same bytes; its outputs are tagged back.
            std::vector<tensor> views;
            std::vector<const tensor*> ptrs;
            views.reserve(ctx.num_inputs());
            for (size_t i = 0; i < ctx.num_inputs(); ++i) {
              const tensor* t = ctx.input(i);
              views.push_back(t ? tensor(t->type(), t->shape(), t->storage(), device_kind::cpu) : tensor());
            }
            for (size_t i = 0; i < views.size(); ++i) ptrs.push_back(views[i].defined() ? &views[i] : nullptr);
            std::vector<tensor> outs(ctx.num_outputs());
            kernel_context inner(ctx.op(), ptrs, &outs, &ctx.pool());
            status st = k->run(inner);
            if (!st.is_ok()) return st;
            for (size_t i = 0; i < outs.size(); ++i)
              ctx.set_output(i, tensor(outs[i].type(), outs[i].shape(), outs[i].storage(), device_kind::cuda));
            return status::ok();
          }
        };
        auto w = std::make_unique<wrap>();
        w->k = std::move(inner).value();
        return std::unique_ptr<kernel>(std::move(w));
      });
    }
    auto copy = [](kernel_context& ctx) -> status {
      const tensor* in = ctx.input(0);
      auto out = ctx.output(0, in->type(), in->shape());
      if (!out) return out.error();
      if (in->bytes()) std::memcpy((*out)->raw(), in->raw(), in->bytes());
      return status::ok();
    };
    ops_.add("MemcpyFromHost", simple_kernel(copy), "com.gpugrid", {0}, {});
    ops_.add("MemcpyToHost", simple_kernel(copy), "com.gpugrid", {}, {0});
  }
  const device_info& info() const override { return info_; }
  const op_registry& ops() const override { return ops_; }
  expected<std::shared_ptr<std::byte>> allocate(size_t bytes) override { return allocate_cpu_bytes(bytes); }
  status upload(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); return status::ok(); }
  status download(void* d, const void* s, size_t n) override { std::memcpy(d, s, n); return status::ok(); }
  expected<std::unique_ptr<run_context>> new_run_context() override {
    return std::unique_ptr<run_context>(std::make_unique<fake_run_context>());
  }

 private:
  device_info info_;
  op_registry ops_;
};

class fake_module final : public device_module {
 public:
  std::vector<device_info> devices() override { return {backend_->info()}; }
  std::string note() override { return ""; }
  const op_registry& ops() override { return backend_->ops(); }
  expected<std::shared_ptr<device_backend>> open(int) override { return std::shared_ptr<device_backend>(backend_); }
  std::shared_ptr<fake_backend> backend_ = std::make_shared<fake_backend>();
};

}  // namespace

TEST_CASE("a session on a device places ops, copies across and matches the CPU", "[backend]") {
  if (!cpu::registry().find("", "MatMul") || !cpu::registry().find("", "Relu") || !cpu::registry().find("", "Add") ||
      !cpu::registry().find("", "Softmax")) {
    WARN("CPU ops missing; skipping");
    return;
  }
  // y = Softmax(Relu(x @ W + b)) with Softmax unsupported on the fake device (CPU fallback).
  auto g = std::make_shared<graph>();
  int x = g->value_id("x"), w = g->value_id("W"), b = g->value_id("b"), mm = g->value_id("mm"),
      add = g->value_id("add"), relu = g->value_id("relu"), y = g->value_id("y");
  g->values[x].type = dtype::f32;
  g->values[x].shape = std::vector<dim_t>{{2, ""}, {3, ""}};
  g->inputs = {x};
  g->outputs = {relu, y};
  g->initializers[w] = tensor::from_vector<float>({3, 2}, {1, -1, 2, 0.5f, -1, 1});
  g->initializers[b] = tensor::from_vector<float>({2}, {0.25f, -0.5f});
  g->opsets[""] = 17;
  auto mk = [&](const char* op, std::vector<int> in, int out) {
    node n = make_node(op);
    n.inputs = std::move(in);
    n.outputs = {out};
    g->nodes.push_back(n);
  };
  mk("MatMul", {x, w}, mm);
  mk("Add", {mm, b}, add);
  mk("Relu", {add}, relu);
  mk("Softmax", {relu}, y);

  tensor in = tensor::from_vector<float>({2, 3}, {1, 2, 3, -1, 0.5f, 2});
  session_options cpu_opt;
  cpu_opt.optimize = false;
  auto cpu_s = session::create(g, cpu_opt);
  REQUIRE(cpu_s.has_value());
  auto want = (*cpu_s)->run({in});
  REQUIRE(want.has_value());

  fake_module module;
  struct restore { ~restore() { set_device_module_for_testing(nullptr); } } restore_module;
  set_device_module_for_testing(&module);
  session_options dev_opt;
  dev_opt.optimize = false;
  dev_opt.device = "cuda";
  auto dev_s = session::create(g, dev_opt);
  REQUIRE(dev_s.has_value());
  CHECK((*dev_s)->device_name() == "cuda:0");
  CHECK((*dev_s)->cpu_fallback_ops().count("Softmax") == 1);
  CHECK((*dev_s)->output_names() == std::vector<std::string>{"relu", "y"});
  fake_kernel_runs = 0;
  for (int round = 0; round < 3; ++round) {  // a planning run, then planned runs
    run_stats stats;
    auto got = (*dev_s)->run({in}, &stats);
    if (!got) FAIL(got.error().message());
    REQUIRE(got->size() == 2);
    for (size_t i = 0; i < 2; ++i) {
      REQUIRE((*got)[i].device() == device_kind::cpu);
      REQUIRE((*got)[i].shape() == (*want)[i].shape());
      for (int64_t k = 0; k < (*got)[i].numel(); ++k)
        CHECK((*got)[i].data<float>()[k] == Approx((*want)[i].data<float>()[k]));
    }
    if (round > 0) CHECK(stats.planned);
  }
  CHECK(fake_kernel_runs == 9);  // MatMul, Add, Relu on the device, three runs
}


namespace {

// y = Relu(x @ W + b) + x @ W: every op can run on a device, so a device session may capture it.
std::shared_ptr<graph> all_device_graph() {
  auto g = std::make_shared<graph>();
  int x = g->value_id("x"), w = g->value_id("W"), b = g->value_id("b"), mm = g->value_id("mm"),
      add = g->value_id("add"), relu = g->value_id("relu"), y = g->value_id("y");
  g->values[x].type = dtype::f32;
  g->values[x].shape = std::vector<dim_t>{{4, ""}, {3, ""}};
  g->inputs = {x};
  g->outputs = {y};
  g->initializers[w] = tensor::from_vector<float>({3, 2}, {1, -1, 2, 0.5f, -1, 1});
  g->initializers[b] = tensor::from_vector<float>({2}, {0.25f, -0.5f});
  g->opsets[""] = 17;
  auto mk = [&](const char* op, std::vector<int> in, int out) {
    node n = make_node(op);
    n.inputs = std::move(in);
    n.outputs = {out};
    g->nodes.push_back(n);
  };
  mk("MatMul", {x, w}, mm);
  mk("Add", {mm, b}, add);
  mk("Relu", {add}, relu);
  mk("Add", {relu, mm}, y);
  return g;
}

void check_repeated_runs(const std::string& device) {
  auto g = all_device_graph();
  session_options cpu_opt, dev_opt;
  cpu_opt.optimize = dev_opt.optimize = false;
  dev_opt.device = device;
  auto cpu_s = session::create(g, cpu_opt);
  auto dev_s = session::create(g, dev_opt);
  REQUIRE(cpu_s.has_value());
  REQUIRE(dev_s.has_value());
  for (int round = 0; round < 6; ++round) {  // plan, warm-up + capture, then replays
    std::vector<float> v(12);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((static_cast<int>(i) * 7 + round * 3) % 11) - 5.f;
    tensor in = tensor::from_vector<float>({4, 3}, v);
    auto want = (*cpu_s)->run({in});
    run_stats stats;
    auto got = (*dev_s)->run({in}, &stats);
    REQUIRE(want.has_value());
    if (!got) FAIL(got.error().message());
    INFO("round " << round << (stats.graph_replay ? " (graph replay)" : ""));
    for (int64_t k = 0; k < (*want)[0].numel(); ++k)
      CHECK((*got)[0].data<float>()[k] == Approx((*want)[0].data<float>()[k]));
  }
}

}  // namespace

TEST_CASE("repeated runs with changing inputs stay right on a device without graphs", "[backend]") {
  if (!cpu::registry().find("", "MatMul") || !cpu::registry().find("", "Relu") || !cpu::registry().find("", "Add")) {
    WARN("CPU ops missing; skipping");
    return;
  }
  fake_module module;
  struct restore { ~restore() { set_device_module_for_testing(nullptr); } } restore_module;
  set_device_module_for_testing(&module);
  check_repeated_runs("cuda");
}

TEST_CASE("repeated runs with changing inputs stay right with CUDA graph replay", "[backend][consistency]") {
  std::string note;
  auto devices = cuda_devices(&note);
  if (devices.empty()) {
    WARN("skipped: no usable GPU (" << note << ")");
    return;
  }
  check_repeated_runs(devices[0].id);
}

TEST_CASE("TF32 reaches the device's run contexts only when asked for", "[backend]") {
  if (!cpu::registry().find("", "Relu")) {
    WARN("CPU ops missing; skipping");
    return;
  }
  auto g = std::make_shared<graph>();
  int x = g->value_id("x"), y = g->value_id("y");
  g->values[x].type = dtype::f32;
  g->values[x].shape = std::vector<dim_t>{{4, ""}};
  g->inputs = {x};
  g->outputs = {y};
  g->opsets[""] = 17;
  node n = make_node("Relu");
  n.inputs = {x};
  n.outputs = {y};
  g->nodes.push_back(n);
  fake_module module;
  struct restore { ~restore() { set_device_module_for_testing(nullptr); } } restore_module;
  set_device_module_for_testing(&module);
  for (bool tf32 : {false, true}) {
    session_options o;
    o.device = "cuda";
    o.allow_tf32 = tf32;
    auto s = session::create(g, o);
    REQUIRE(s.has_value());
    tf32_seen = -1;
    auto out = (*s)->run({tensor::from_vector<float>({4}, {-1, 2, -3, 4})});
    REQUIRE(out.has_value());
    CHECK(tf32_seen == (tf32 ? 1 : 0));
  }
}
