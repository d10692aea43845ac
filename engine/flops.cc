#include "engine/flops.h"

#include <random>

#include "engine/session.h"

namespace gpugrid {

int64_t node_flops(const node& n, const std::vector<const tensor*>& in, const std::vector<const tensor*>& out) {
  auto out_elems = [&]() -> int64_t {
    int64_t s = 0;
    for (auto* t : out) if (t && t->defined()) s += t->numel();
    return s;
  };
  const std::string& op = n.op_type;
  if ((op == "MatMul" || op == "FusedMatMul") && in.size() >= 2 && in[0] && !out.empty() && out[0]) {
    int64_t k = in[0]->rank() ? in[0]->shape().back() : 1;
    return 2 * out[0]->numel() * k;
  }
  if ((op == "Gemm" || op == "FusedGemm") && in.size() >= 2 && in[0] && !out.empty() && out[0]) {
    int64_t k = n.attr_int("transA", 0) ? in[0]->dim(0) : in[0]->shape().back();
    return 2 * out[0]->numel() * k;
  }
  if ((op == "Conv" || op == "FusedConv") && in.size() >= 2 && in[1] && !out.empty() && out[0]) {
    int64_t per_out = 1;
    for (size_t d = 1; d < in[1]->rank(); ++d) per_out *= in[1]->dim(d);
    return 2 * out[0]->numel() * per_out;
  }
  if (op == "ConvTranspose" && in.size() >= 2 && in[0] && in[1]) {
    int64_t per_in = 1;
    for (size_t d = 1; d < in[1]->rank(); ++d) per_in *= in[1]->dim(d);
    return 2 * in[0]->numel() * per_in;
  }
  return out_elems();
}

expected<int64_t> estimate_flops(std::shared_ptr<const graph> g) {
  session_options opt;
  opt.memory_plan = false;
  auto s = session::create(g, opt);
  if (!s) return s.error();
  const graph& gr = (*s)->model();
  std::mt19937 rng(1);
  std::vector<tensor> inputs;
  for (int id : gr.inputs) {
    const value_info& v = gr.values[id];
    if (!v.shape || v.type == dtype::undefined) return invalid_input("input '{}' has no declared shape", v.name);
    shape_t shape;
    for (const auto& d : *v.shape) shape.push_back(d.value >= 0 ? d.value : 1);
    int64_t n = 0;
    if (!checked_num_elements(shape, int64_t{1} << 30, &n)) return invalid_input("input '{}' is too large", v.name);
    tensor t = tensor::zeros(v.type, shape);
    if (v.type == dtype::f32) {
      std::uniform_real_distribution<float> u(-1, 1);
      for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = u(rng);
    }
    inputs.push_back(std::move(t));
  }
  int64_t total = 0;
  session::node_observer obs = [&](const node& n, const std::vector<const tensor*>& in,
                                   const std::vector<const tensor*>& out) { total += node_flops(n, in, out); };
  auto r = (*s)->run(inputs, nullptr, &obs);
  if (!r) return r.error();
  return total;
}

}  // namespace gpugrid
