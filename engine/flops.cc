#include "engine/flops.h"

#include <algorithm>
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
  // Recurrent nets: per step and direction, the input and recurrent products of every gate.
  if ((op == "LSTM" || op == "GRU" || op == "RNN") && in.size() >= 3 && in[0] && in[1] && in[2] &&
      in[1]->rank() == 3 && in[2]->rank() == 3 && in[1]->dim(2) > 0) {
    const int64_t steps_x_batch = in[0]->numel() / in[1]->dim(2);
    return 2 * steps_x_batch * in[1]->dim(0) * in[1]->dim(1) * (in[1]->dim(2) + in[2]->dim(2));
  }
  if (n.domain == "com.microsoft" && !out.empty() && out[0]) {
    if (op == "MatMulNBits") return 2 * out[0]->numel() * n.attr_int("K", 0);
    if ((op == "DynamicQuantizeMatMul" || op == "MatMulIntegerToFloat") && in.size() >= 2 && in[1] && in[1]->rank() == 2)
      return 2 * out[0]->numel() * in[1]->dim(0);
    // Attention: scores and the weighted sum, 4 * (query elements) * (keys), plus Attention's
    // input projection.
    if (op == "GroupQueryAttention" || op == "MultiHeadAttention" || op == "Attention") {
      int64_t keys = 0;
      if (out.size() > 1 && out[1] && out[1]->rank() >= 2) keys = out[1]->dim(out[1]->rank() - 2);
      else if (op == "MultiHeadAttention" && in.size() > 1 && in[1] && in[1]->rank() == 3) keys = in[1]->dim(1);
      else if (in[0] && in[0]->rank() == 3) keys = in[0]->dim(1);
      int64_t f = 4 * out[0]->numel() * keys;
      if (op == "Attention" && in.size() > 1 && in[0] && in[1] && in[1]->rank() == 2)
        f += 2 * (in[0]->numel() / std::max<int64_t>(1, in[1]->dim(0))) * in[1]->dim(0) * in[1]->dim(1);
      return f;
    }
  }
  return out_elems();
}

expected<int64_t> estimate_flops(std::shared_ptr<const graph> g) {
  session_options opt;
  opt.memory_plan = false;
  auto s = session::create(g, opt);
  if (!s) return s.error();
  const graph& gr = (*s)->model();
  // Inputs: random floats, integers all `fill`. Zeros first; when the model refuses them
  // (an attention mask of zeros gives a decoder negative sequence lengths), ones.
  auto make_inputs = [&](int fill, std::vector<tensor>* inputs) -> status {
    std::mt19937 rng(1);
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
      } else if (fill != 0 && (v.type == dtype::i64 || v.type == dtype::i32)) {
        for (int64_t i = 0; i < n; ++i) {
          if (v.type == dtype::i64) t.data<int64_t>()[i] = fill;
          else t.data<int32_t>()[i] = fill;
        }
      }
      inputs->push_back(std::move(t));
    }
    return status::ok();
  };
  expected<int64_t> result = int64_t{0};
  for (int fill : {0, 1}) {
    std::vector<tensor> inputs;
    GG_RETURN_IF_ERROR(make_inputs(fill, &inputs));
    int64_t total = 0;
    session::node_observer obs = [&](const node& n, const std::vector<const tensor*>& in,
                                     const std::vector<const tensor*>& out) { total += node_flops(n, in, out); };
    auto r = (*s)->run(inputs, nullptr, &obs);
    if (r) return total;
    if (fill == 0) result = r.error();
  }
  return result;
}

}  // namespace gpugrid
