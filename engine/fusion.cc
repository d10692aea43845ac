#include "engine/fusion.h"

#include <cmath>
#include <map>
#include <set>

namespace gpugrid {

namespace {

class rewriter {
 public:
  explicit rewriter(graph& g) : g_(g) { index(); }

  void index() {
    producer_.assign(g_.values.size(), -1);
    consumers_.assign(g_.values.size(), {});
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      for (int o : g_.nodes[i].outputs) if (o >= 0) producer_[o] = static_cast<int>(i);
      for (int in : g_.nodes[i].inputs) if (in >= 0) consumers_[in].push_back(static_cast<int>(i));
    }
    outputs_ = std::set<int>(g_.outputs.begin(), g_.outputs.end());
  }

  // The single node reading v (and v is not a graph output), else -1.
  int sole_consumer(int v) const {
    if (v < 0 || outputs_.count(v) || consumers_[v].size() != 1) return -1;
    return consumers_[v][0];
  }
  node* producer(int v) { return v >= 0 && producer_[v] >= 0 ? &g_.nodes[producer_[v]] : nullptr; }
  const tensor* constant(int v) const {
    auto it = v >= 0 ? g_.initializers.find(v) : g_.initializers.end();
    return it == g_.initializers.end() ? nullptr : &it->second;
  }
  bool scalar_near(int v, double want, double tol = 1e-4) const {
    const tensor* t = constant(v);
    return t && t->numel() == 1 && is_float(t->type()) && std::fabs(t->as_double(0) - want) <= tol * std::max(1.0, std::fabs(want));
  }
  node& at(int i) { return g_.nodes[i]; }
  bool alive(int i) const { return !dead_.count(i); }
  void kill(int i) { dead_.insert(i); }
  int add_constant(const std::string& name, tensor t) {
    std::string n = name;
    for (int k = 1; g_.find_value(n) >= 0; ++k) n = name + "_" + std::to_string(k);
    int id = g_.value_id(n);
    g_.values[id].type = t.type();
    g_.initializers[id] = std::move(t);
    return id;
  }
  void finish() {
    std::vector<node> kept;
    for (size_t i = 0; i < g_.nodes.size(); ++i) if (!dead_.count(static_cast<int>(i))) kept.push_back(std::move(g_.nodes[i]));
    g_.nodes = std::move(kept);
    dead_.clear();
    index();
  }
  graph& g() { return g_; }
  size_t size() const { return g_.nodes.size(); }
  const std::vector<int>& consumers(int v) const { return consumers_[v]; }

 private:
  graph& g_;
  std::vector<int> producer_;
  std::vector<std::vector<int>> consumers_;
  std::set<int> outputs_;
  std::set<int> dead_;
};

bool is_op(const node& n, const char* op) { return n.domain.empty() && n.op_type == op; }

attribute str_attr(const std::string& s) { attribute a; a.type = attribute::kind::string; a.s = s; return a; }
attribute float_attr(float f) { attribute a; a.type = attribute::kind::floating; a.f = f; return a; }

// BatchNormalization(Conv(x, W, B)) -> Conv(x, W', B') with the normalisation folded in.
void fold_batchnorm_into_conv(rewriter& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    node& conv = r.at(static_cast<int>(i));
    if (!r.alive(static_cast<int>(i)) || !is_op(conv, "Conv") || conv.inputs.size() < 2) continue;
    int bn_i = r.sole_consumer(conv.outputs[0]);
    if (bn_i < 0) continue;
    node& bn = r.at(bn_i);
    if (!is_op(bn, "BatchNormalization") || bn.inputs.size() < 5 || bn.inputs[0] != conv.outputs[0]) continue;
    if (bn.outputs.size() > 1) {
      bool extra = false;
      for (size_t k = 1; k < bn.outputs.size(); ++k) if (bn.outputs[k] >= 0) extra = true;
      if (extra) continue;
    }
    const tensor* w = r.constant(conv.inputs[1]);
    const tensor* b = conv.inputs.size() > 2 ? r.constant(conv.inputs[2]) : nullptr;
    if (conv.inputs.size() > 2 && conv.inputs[2] >= 0 && !b) continue;
    const tensor *scale = r.constant(bn.inputs[1]), *bias = r.constant(bn.inputs[2]),
                 *mean = r.constant(bn.inputs[3]), *var = r.constant(bn.inputs[4]);
    if (!w || !scale || !bias || !mean || !var || w->type() != dtype::f32 || w->rank() < 3) continue;
    const int64_t co = w->dim(0);
    if (scale->numel() != co || bias->numel() != co || mean->numel() != co || var->numel() != co) continue;
    if ((b && b->numel() != co) || scale->type() != dtype::f32 || bias->type() != dtype::f32 ||
        mean->type() != dtype::f32 || var->type() != dtype::f32)
      continue;
    float eps = bn.attr_float("epsilon", 1e-5f);
    tensor nw = w->clone();
    tensor nb = tensor::zeros(dtype::f32, {co});
    const int64_t per = w->numel() / co;
    for (int64_t c = 0; c < co; ++c) {
      float f = scale->data<float>()[c] / std::sqrt(var->data<float>()[c] + eps);
      for (int64_t k = 0; k < per; ++k) nw.data<float>()[c * per + k] *= f;
      float b0 = b ? b->data<float>()[c] : 0.f;
      nb.data<float>()[c] = (b0 - mean->data<float>()[c]) * f + bias->data<float>()[c];
    }
    std::string base = conv.name.empty() ? "conv" : conv.name;
    conv.inputs.resize(3);
    conv.inputs[1] = r.add_constant(base + "::bn_folded_W", std::move(nw));
    conv.inputs[2] = r.add_constant(base + "::bn_folded_B", std::move(nb));
    conv.outputs[0] = bn.outputs[0];
    r.kill(bn_i);
  }
  r.finish();
}

// Describes node n as an activation the fused kernels apply, or returns false.
bool as_activation(rewriter& r, const node& n, std::map<std::string, attribute>* attrs) {
  if (!n.domain.empty() && !(n.domain == "com.gpugrid" && n.op_type == "Silu")) return false;
  if (n.inputs.empty() || n.outputs.size() != 1) return false;
  const std::string& op = n.op_type;
  if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "Silu") {
    (*attrs)["activation"] = str_attr(op);
  } else if (op == "LeakyRelu") {
    (*attrs)["activation"] = str_attr(op);
    (*attrs)["activation_alpha"] = float_attr(n.attr_float("alpha", 0.01f));
  } else if (op == "HardSigmoid") {
    (*attrs)["activation"] = str_attr(op);
    (*attrs)["activation_alpha"] = float_attr(n.attr_float("alpha", 0.2f));
    (*attrs)["activation_beta"] = float_attr(n.attr_float("beta", 0.5f));
  } else if (op == "HardSwish") {
    (*attrs)["activation"] = str_attr(op);
  } else if (op == "Gelu" && n.attr_string("approximate", "none") == "none") {
    (*attrs)["activation"] = str_attr(op);
  } else if (op == "Clip") {
    float lo = -3.402823466e38f, hi = 3.402823466e38f;
    if (n.inputs.size() > 1 && n.inputs[1] >= 0) {
      const tensor* t = r.constant(n.inputs[1]);
      if (!t || t->numel() != 1 || t->type() != dtype::f32) return false;
      lo = t->data<float>()[0];
    }
    if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
      const tensor* t = r.constant(n.inputs[2]);
      if (!t || t->numel() != 1 || t->type() != dtype::f32) return false;
      hi = t->data<float>()[0];
    }
    (*attrs)["activation"] = str_attr("Clip");
    (*attrs)["activation_alpha"] = float_attr(lo);
    (*attrs)["activation_beta"] = float_attr(hi);
  } else {
    return false;
  }
  return true;
}

// x * Sigmoid(x) -> com.gpugrid:Silu(x).
void fuse_silu(rewriter& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    node& sig = r.at(static_cast<int>(i));
    if (!r.alive(static_cast<int>(i)) || !is_op(sig, "Sigmoid") || sig.inputs.empty()) continue;
    int mul_i = r.sole_consumer(sig.outputs[0]);
    if (mul_i < 0) continue;
    node& mul = r.at(mul_i);
    if (!is_op(mul, "Mul") || mul.inputs.size() != 2) continue;
    int x = sig.inputs[0];
    if (!((mul.inputs[0] == x && mul.inputs[1] == sig.outputs[0]) || (mul.inputs[1] == x && mul.inputs[0] == sig.outputs[0])))
      continue;
    node silu;
    silu.name = mul.name.empty() ? sig.name + "::silu" : mul.name;
    silu.op_type = "Silu";
    silu.domain = "com.gpugrid";
    silu.opset = 1;
    silu.inputs = {x};
    silu.outputs = {mul.outputs[0]};
    mul = std::move(silu);
    r.kill(static_cast<int>(i));
  }
  r.finish();
}

// x * 0.5 * (1 + Erf(x / sqrt(2))) in any operand order -> Gelu(x).
void fuse_gelu(rewriter& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    node& erf = r.at(static_cast<int>(i));
    if (!r.alive(static_cast<int>(i)) || !is_op(erf, "Erf") || erf.inputs.empty()) continue;
    node* div = r.producer(erf.inputs[0]);
    if (!div || r.sole_consumer(div->outputs[0]) != static_cast<int>(i) || div->inputs.size() != 2) continue;
    int x = div->inputs[0];
    bool ok = (is_op(*div, "Div") && r.scalar_near(div->inputs[1], std::sqrt(2.0))) ||
              (is_op(*div, "Mul") && r.scalar_near(div->inputs[1], 1.0 / std::sqrt(2.0)));
    if (!ok) continue;
    int add_i = r.sole_consumer(erf.outputs[0]);
    if (add_i < 0) continue;
    node& add = r.at(add_i);
    if (!is_op(add, "Add") || add.inputs.size() != 2) continue;
    int one = add.inputs[0] == erf.outputs[0] ? add.inputs[1] : add.inputs[0];
    if (!r.scalar_near(one, 1.0)) continue;
    // Two orders: (x * (1+erf)) * 0.5 or (x * 0.5) * (1+erf) or x * ((1+erf) * 0.5).
    int m1_i = r.sole_consumer(add.outputs[0]);
    if (m1_i < 0 || !is_op(r.at(m1_i), "Mul")) continue;
    node& m1 = r.at(m1_i);
    int other = m1.inputs[0] == add.outputs[0] ? m1.inputs[1] : m1.inputs[0];
    int final_i = -1;
    std::vector<int> doomed = {static_cast<int>(i), add_i};
    if (other == x) {
      int m2_i = r.sole_consumer(m1.outputs[0]);
      if (m2_i < 0 || !is_op(r.at(m2_i), "Mul")) continue;
      node& m2 = r.at(m2_i);
      int half = m2.inputs[0] == m1.outputs[0] ? m2.inputs[1] : m2.inputs[0];
      if (!r.scalar_near(half, 0.5)) continue;
      doomed.push_back(m1_i);
      final_i = m2_i;
    } else if (r.scalar_near(other, 0.5)) {
      int m2_i = r.sole_consumer(m1.outputs[0]);
      if (m2_i < 0 || !is_op(r.at(m2_i), "Mul")) continue;
      node& m2 = r.at(m2_i);
      int xx = m2.inputs[0] == m1.outputs[0] ? m2.inputs[1] : m2.inputs[0];
      if (xx != x) continue;
      doomed.push_back(m1_i);
      final_i = m2_i;
    } else {
      node* xh = r.producer(other);  // other = x * 0.5
      if (!xh || !is_op(*xh, "Mul") || r.sole_consumer(other) != m1_i) continue;
      int a = xh->inputs[0], b = xh->inputs[1];
      if (!((a == x && r.scalar_near(b, 0.5)) || (b == x && r.scalar_near(a, 0.5)))) continue;
      final_i = m1_i;
      for (size_t k = 0; k < r.size(); ++k) if (&r.at(static_cast<int>(k)) == xh) doomed.push_back(static_cast<int>(k));
    }
    doomed.push_back(-1);
    node gelu;
    gelu.name = r.at(final_i).name.empty() ? "gelu" : r.at(final_i).name;
    gelu.op_type = "Gelu";
    gelu.opset = 20;
    gelu.inputs = {x};
    gelu.outputs = {r.at(final_i).outputs[0]};
    for (int d : doomed) if (d >= 0) r.kill(d);
    for (size_t k = 0; k < r.size(); ++k) if (div == &r.at(static_cast<int>(k))) r.kill(static_cast<int>(k));
    r.at(final_i) = std::move(gelu);
  }
  r.finish();
}

// Conv/Gemm/MatMul(+bias) followed by an activation -> com.gpugrid Fused* with the activation.
void fuse_bias_and_activation(rewriter& r) {
  // MatMul(A, B const 2-D) + Add(bias const [N]) -> FusedMatMul(A, B, bias).
  for (size_t i = 0; i < r.size(); ++i) {
    node& mm = r.at(static_cast<int>(i));
    if (!r.alive(static_cast<int>(i)) || !is_op(mm, "MatMul") || mm.inputs.size() != 2) continue;
    const tensor* b = r.constant(mm.inputs[1]);
    if (!b || b->rank() != 2 || b->type() != dtype::f32) continue;
    int add_i = r.sole_consumer(mm.outputs[0]);
    if (add_i < 0 || !is_op(r.at(add_i), "Add")) continue;
    node& add = r.at(add_i);
    int bias = add.inputs[0] == mm.outputs[0] ? add.inputs[1] : add.inputs[0];
    const tensor* bt = r.constant(bias);
    if (!bt || bt->type() != dtype::f32 || bt->numel() != b->dim(1) || bt->rank() > 1) continue;
    mm.op_type = "FusedMatMul";
    mm.domain = "com.gpugrid";
    mm.inputs.push_back(bias);
    mm.outputs[0] = add.outputs[0];
    r.kill(add_i);
  }
  r.finish();
  for (size_t i = 0; i < r.size(); ++i) {
    node& n = r.at(static_cast<int>(i));
    std::string fused;
    if (is_op(n, "Conv")) fused = "FusedConv";
    else if (is_op(n, "Gemm")) fused = "FusedGemm";
    else if (is_op(n, "MatMul")) fused = "FusedMatMul";
    else if (n.domain == "com.gpugrid" && n.op_type == "FusedMatMul" && !n.has_attr("activation")) fused = "FusedMatMul";
    else continue;
    if (!r.alive(static_cast<int>(i)) || n.outputs.size() != 1) continue;
    int out = n.outputs[0];
    int act_i = r.sole_consumer(out);
    std::map<std::string, attribute> attrs;
    if (act_i >= 0 && r.at(act_i).inputs[0] == out && as_activation(r, r.at(act_i), &attrs)) {
      n.outputs[0] = r.at(act_i).outputs[0];
      r.kill(act_i);
    } else if (fused == "FusedConv" && r.consumers(out).size() == 2) {
      // Conv -> Sigmoid and Mul(conv, sigmoid): SiLU (EfficientNet-style).
      int a = r.consumers(out)[0], b = r.consumers(out)[1];
      if (is_op(r.at(b), "Sigmoid")) std::swap(a, b);
      node& sig = r.at(a);
      node& mul = r.at(b);
      if (!is_op(sig, "Sigmoid") || !is_op(mul, "Mul") || r.sole_consumer(sig.outputs[0]) != b) continue;
      bool pair = (mul.inputs[0] == out && mul.inputs[1] == sig.outputs[0]) || (mul.inputs[1] == out && mul.inputs[0] == sig.outputs[0]);
      if (!pair) continue;
      attrs["activation"] = str_attr("Silu");
      n.outputs[0] = mul.outputs[0];
      r.kill(a);
      r.kill(b);
    } else if (fused == "FusedMatMul" && n.domain == "com.gpugrid") {
      continue;  // bias only; already fused
    } else {
      continue;
    }
    n.op_type = fused;
    n.domain = "com.gpugrid";
    for (auto& [k, v] : attrs) n.attrs[k] = v;
  }
  r.finish();
}

}  // namespace

status fuse_operators(graph& g) {
  rewriter r(g);
  fold_batchnorm_into_conv(r);
  fuse_gelu(r);
  fuse_bias_and_activation(r);
  fuse_silu(r);
  return status::ok();
}

}  // namespace gpugrid
