// Runs every op the CUDA backend registers on the CPU and on the GPU with the same inputs and
// compares the results. Skipped, with the reason, on machines without a usable GPU.
#include <catch2/catch.hpp>

#include <map>
#include <random>

#include "engine/backend.h"
#include "engine/op_runner.h"
#include "engine/session.h"
#include "engine/tensor_compare.h"
#include "kernels/cpu/cpu_ops.h"
#include "tests/consistency_cases.h"

using namespace gpugrid;

namespace {

// One node as a graph: runtime inputs become graph inputs, constant ones initializers.
std::shared_ptr<graph> single_node_graph(const consistency_case& c) {
  auto g = std::make_shared<graph>();
  g->opsets[""] = c.n.opset;
  g->opsets["com.gpugrid"] = 1;
  node n = c.n;
  n.inputs.clear();
  n.outputs.clear();
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!c.inputs[i].defined()) { n.inputs.push_back(-1); continue; }
    int id = g->value_id("in" + std::to_string(i));
    n.inputs.push_back(id);
    bool constant = std::find(c.constant_inputs.begin(), c.constant_inputs.end(), static_cast<int>(i)) != c.constant_inputs.end();
    if (constant) {
      g->initializers[id] = c.inputs[i];
    } else {
      g->values[id].type = c.inputs[i].type();
      std::vector<dim_t> dims;
      for (int64_t d : c.inputs[i].shape()) dims.push_back({d, ""});
      g->values[id].shape = dims;
      g->inputs.push_back(id);
    }
  }
  for (int o = 0; o < c.num_outputs; ++o) {
    int id = g->value_id("out" + std::to_string(o));
    n.outputs.push_back(id);
    g->outputs.push_back(id);
  }
  g->nodes.push_back(n);
  return g;
}

expected<std::vector<tensor>> run_on(const consistency_case& c, const std::string& device) {
  auto g = single_node_graph(c);
  session_options opt;
  opt.optimize = false;
  opt.device = device;
  opt.threads = 1;
  auto s = session::create(g, opt);
  if (!s) return s.error();
  if (device != "cpu" && !(*s)->cpu_fallback_ops().empty())
    return internal_error("{} did not run on the device", c.n.op_type);
  std::vector<tensor> ins;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    bool constant = std::find(c.constant_inputs.begin(), c.constant_inputs.end(), static_cast<int>(i)) != c.constant_inputs.end();
    if (c.inputs[i].defined() && !constant) ins.push_back(c.inputs[i]);
  }
  return (*s)->run(ins);
}

}  // namespace

TEST_CASE("every CUDA op matches the CPU reference", "[consistency]") {
  std::string note;
  auto devices = cuda_devices(&note);
  if (devices.empty()) {
    WARN("skipped: no usable GPU (" << note << ")");
    return;
  }
  std::string why;
  const op_registry* cuda = cuda_ops(&why);
  REQUIRE(cuda != nullptr);
  auto cases = consistency_cases();
  std::map<std::string, int> covered;
  for (const auto& c : cases) covered[(c.n.domain.empty() ? "" : c.n.domain + ":") + c.n.op_type]++;
  for (const std::string& op : cuda->op_types()) {
    if (op.rfind("com.gpugrid:Memcpy", 0) == 0) continue;
    INFO("op " << op);
    CHECK(covered.count(op) == 1);  // every CUDA op needs at least one consistency case
  }
  int compared = 0;
  for (const auto& c : cases) {
    std::string op = (c.n.domain.empty() ? "" : c.n.domain + ":") + c.n.op_type;
    if (!cuda->find(c.n.domain, c.n.op_type)) continue;
    INFO("case " << c.label);
    auto want = run_on(c, "cpu");
    REQUIRE(want.has_value());
    auto got = run_on(c, devices[0].id);
    if (!got) FAIL_CHECK(got.error().message());
    if (!got) continue;
    REQUIRE(got->size() == want->size());
    for (size_t i = 0; i < got->size(); ++i) {
      std::string diff;
      bool ok = tensors_close((*got)[i], (*want)[i], c.tol, &diff);
      INFO("output " << i << ": " << diff);
      CHECK(ok);
    }
    ++compared;
  }
  WARN("compared " << compared << " cases on " << devices[0].name);
}
