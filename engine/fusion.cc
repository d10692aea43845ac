#include "engine/fusion.h"

#include <cmath>
#include <map>
#include <optional>
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
  // The index of the node writing v, else -1 (a graph input or constant).
  int producer_index(int v) const { return v >= 0 ? producer_[v] : -1; }
  bool is_output(int v) const { return outputs_.count(v) != 0; }
  // The declared rank of v, and its last dimension, or -1 when not declared.
  int rank_of(int v) const {
    if (v < 0 || !g_.values[v].shape) return -1;
    return static_cast<int>(g_.values[v].shape->size());
  }
  int64_t last_dim(int v) const {
    if (rank_of(v) <= 0) return -1;
    return g_.values[v].shape->back().value;
  }
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

// The operand of the two-input node n that is not v; -1 when v is not one of its operands.
int other_operand(const node& n, int v) {
  if (n.inputs.size() != 2) return -1;
  if (n.inputs[0] == v) return n.inputs[1];
  if (n.inputs[1] == v) return n.inputs[0];
  return -1;
}

// The operand of the two-input node n that is not the scalar constant `want`; -1 when neither is.
int operand_beside_scalar(const rewriter& r, const node& n, double want) {
  if (n.inputs.size() != 2) return -1;
  if (r.scalar_near(n.inputs[1], want)) return n.inputs[0];
  if (r.scalar_near(n.inputs[0], want)) return n.inputs[1];
  return -1;
}

// The end of a GELU: the output of node add_i (1 + erf or tanh term) times x times 0.5, as
// (x * t) * 0.5, (t * 0.5) * x or (x * 0.5) * t in any operand order, each intermediate read
// once. Returns the index of the last Mul and appends the other nodes it used to *used, or -1.
int match_half_x_product(rewriter& r, int add_i, int x, std::vector<int>* used) {
  const int t = r.at(add_i).outputs[0];
  const int m1_i = r.sole_consumer(t);
  if (m1_i < 0 || !is_op(r.at(m1_i), "Mul")) return -1;
  const node& m1 = r.at(m1_i);
  const int other = other_operand(m1, t);
  if (other < 0 || other == t) return -1;
  if (other == x || r.scalar_near(other, 0.5)) {
    const int m2_i = r.sole_consumer(m1.outputs[0]);
    if (m2_i < 0 || !is_op(r.at(m2_i), "Mul")) return -1;
    const int last = other_operand(r.at(m2_i), m1.outputs[0]);
    if (other == x ? !r.scalar_near(last, 0.5) : last != x) return -1;
    used->push_back(m1_i);
    return m2_i;
  }
  const int xh_i = r.producer_index(other);  // other = x * 0.5
  if (xh_i < 0 || !is_op(r.at(xh_i), "Mul") || r.sole_consumer(other) != m1_i) return -1;
  if (operand_beside_scalar(r, r.at(xh_i), 0.5) != x) return -1;
  used->push_back(xh_i);
  return m1_i;
}

node make_gelu(const node& last, int x, const char* approximate) {
  node gelu;
  gelu.name = last.name.empty() ? "gelu" : last.name;
  gelu.op_type = "Gelu";
  gelu.opset = 20;
  gelu.inputs = {x};
  gelu.outputs = {last.outputs[0]};
  if (std::string(approximate) != "none") gelu.attrs["approximate"] = str_attr(approximate);
  return gelu;
}

// x * 0.5 * (1 + Erf(x / sqrt(2))) in any operand order -> Gelu(x).
void fuse_gelu(rewriter& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    node& erf = r.at(static_cast<int>(i));
    if (!r.alive(static_cast<int>(i)) || !is_op(erf, "Erf") || erf.inputs.empty()) continue;
    const int div_i = r.producer_index(erf.inputs[0]);
    if (div_i < 0 || r.sole_consumer(erf.inputs[0]) != static_cast<int>(i)) continue;
    const node& div = r.at(div_i);
    if (div.inputs.size() != 2) continue;
    int x = div.inputs[0];
    bool ok = (is_op(div, "Div") && r.scalar_near(div.inputs[1], std::sqrt(2.0))) ||
              (is_op(div, "Mul") && r.scalar_near(div.inputs[1], 1.0 / std::sqrt(2.0)));
    if (!ok) continue;
    int add_i = r.sole_consumer(erf.outputs[0]);
    if (add_i < 0 || !is_op(r.at(add_i), "Add")) continue;
    if (!r.scalar_near(other_operand(r.at(add_i), erf.outputs[0]), 1.0)) continue;
    std::vector<int> used = {div_i, static_cast<int>(i), add_i};
    const int last_i = match_half_x_product(r, add_i, x, &used);
    if (last_i < 0) continue;
    for (int d : used) r.kill(d);
    r.at(last_i) = make_gelu(r.at(last_i), x, "none");
  }
  r.finish();
}

// The cubic term of the tanh GELU, 0.044715 * x^3 with x^3 as Pow(x, 3), (x * x) * x or
// x * (x * x): the value c, read only by node reader_i. Appends the nodes it used to *used.
bool match_cubic_term(rewriter& r, int c, int x, int reader_i, std::vector<int>* used) {
  const int c_i = r.producer_index(c);
  if (c_i < 0 || !is_op(r.at(c_i), "Mul") || r.sole_consumer(c) != reader_i) return false;
  const int cube = operand_beside_scalar(r, r.at(c_i), 0.044715);
  const int cube_i = r.producer_index(cube);
  if (cube_i < 0 || r.sole_consumer(cube) != c_i) return false;
  const node& cn = r.at(cube_i);
  if (is_op(cn, "Pow")) {
    if (cn.inputs.size() != 2 || cn.inputs[0] != x || !r.scalar_near(cn.inputs[1], 3.0, 1e-6)) return false;
    used->insert(used->end(), {c_i, cube_i});
    return true;
  }
  if (!is_op(cn, "Mul")) return false;
  const int sq = other_operand(cn, x);
  const int sq_i = r.producer_index(sq);
  if (sq == x || sq_i < 0 || !is_op(r.at(sq_i), "Mul") || r.sole_consumer(sq) != cube_i) return false;
  const node& sn = r.at(sq_i);
  if (sn.inputs.size() != 2 || sn.inputs[0] != x || sn.inputs[1] != x) return false;
  used->insert(used->end(), {c_i, cube_i, sq_i});
  return true;
}

// 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) in any operand order (GPT-2's
// "gelu_new", PyTorch's gelu(approximate='tanh') below opset 20) -> Gelu(x, approximate="tanh").
void fuse_gelu_tanh(rewriter& r) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  for (size_t i = 0; i < r.size(); ++i) {
    const int tanh_i = static_cast<int>(i);
    const node& th = r.at(tanh_i);
    if (!r.alive(tanh_i) || !is_op(th, "Tanh") || th.inputs.size() != 1 || th.outputs.size() != 1) continue;
    const int scale_i = r.producer_index(th.inputs[0]);
    if (scale_i < 0 || !is_op(r.at(scale_i), "Mul") || r.sole_consumer(th.inputs[0]) != tanh_i) continue;
    const int inner = operand_beside_scalar(r, r.at(scale_i), k);
    const int inner_i = r.producer_index(inner);
    if (inner_i < 0 || !is_op(r.at(inner_i), "Add") || r.sole_consumer(inner) != scale_i) continue;
    const node& in = r.at(inner_i);
    if (in.inputs.size() != 2) continue;
    std::vector<int> used = {scale_i, inner_i, tanh_i};
    int x = -1;
    for (int side = 0; side < 2 && x < 0; ++side) {
      const int cand = in.inputs[side], c = in.inputs[1 - side];
      if (match_cubic_term(r, c, cand, inner_i, &used)) x = cand;
    }
    if (x < 0) continue;
    const int add_i = r.sole_consumer(th.outputs[0]);
    if (add_i < 0 || !is_op(r.at(add_i), "Add")) continue;
    if (!r.scalar_near(other_operand(r.at(add_i), th.outputs[0]), 1.0)) continue;
    used.push_back(add_i);
    const int last_i = match_half_x_product(r, add_i, x, &used);
    if (last_i < 0) continue;
    for (int d : used) r.kill(d);
    r.at(last_i) = make_gelu(r.at(last_i), x, "tanh");
  }
  r.finish();
}

// True when Reduce* node n keeps dims and reduces exactly the last axis of its input, whose
// rank is `rank` (-1 when unknown; then only axes = [-1] qualifies).
bool reduces_last_axis(const rewriter& r, const node& n, int rank) {
  if (n.attr_int("keepdims", 1) != 1 || n.inputs.empty() || n.outputs.size() != 1) return false;
  std::vector<int64_t> axes;
  if (n.inputs.size() > 1 && n.inputs[1] >= 0) {
    const tensor* t = r.constant(n.inputs[1]);
    if (!t || t->type() != dtype::i64) return false;
    for (int64_t k = 0; k < t->numel(); ++k) axes.push_back(t->data<int64_t>()[k]);
  } else {
    axes = n.attr_ints("axes");
  }
  return axes.size() == 1 && (axes[0] == -1 || (rank > 0 && axes[0] == rank - 1));
}

// A constant Scale or B for LayerNormalization over the last axis of x: float, one value per
// element of that axis (any leading dims 1 and not above x's rank), as a 1-D tensor.
std::optional<tensor> last_axis_param(const rewriter& r, int v, int x_rank) {
  const tensor* t = r.constant(v);
  if (!t || !is_float(t->type()) || t->rank() == 0) return std::nullopt;
  if (t->rank() > 1 && (x_rank < 0 || static_cast<int>(t->rank()) > x_rank)) return std::nullopt;
  for (size_t d = 0; d + 1 < t->rank(); ++d)
    if (t->dim(d) != 1) return std::nullopt;
  return t->reshaped({t->numel()});
}

// ReduceMean(x) -> Sub -> Pow 2 (or Mul by itself) -> ReduceMean -> Add eps -> Sqrt -> Div ->
// Mul gamma -> Add beta (optional), over the last axis (PyTorch's LayerNorm below opset 17,
// many BERT and GPT-2 files) -> LayerNormalization(x, gamma, beta, axis=-1, epsilon=eps).
void fuse_layernorm(rewriter& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    const int mean_i = static_cast<int>(i);
    const node& mean = r.at(mean_i);
    if (!r.alive(mean_i) || !is_op(mean, "ReduceMean")) continue;
    const int x = mean.inputs.empty() ? -1 : mean.inputs[0];
    const int rank = r.rank_of(x);
    if (x < 0 || !reduces_last_axis(r, mean, rank)) continue;
    const int sub_i = r.sole_consumer(mean.outputs[0]);
    if (sub_i < 0 || !is_op(r.at(sub_i), "Sub")) continue;
    const node& sub = r.at(sub_i);
    if (sub.inputs.size() != 2 || sub.inputs[0] != x || sub.inputs[1] != mean.outputs[0]) continue;
    // d = x - mean feeds the square and the Div, nothing else.
    const int d = sub.outputs[0];
    if (d < 0 || r.is_output(d)) continue;
    int sq_i = -1, div_i = -1;
    bool clean = true;
    for (int c : r.consumers(d)) {
      if (is_op(r.at(c), "Div") && (div_i < 0 || div_i == c)) div_i = c;
      else if ((is_op(r.at(c), "Pow") || is_op(r.at(c), "Mul")) && (sq_i < 0 || sq_i == c)) sq_i = c;
      else clean = false;
    }
    if (!clean || sq_i < 0 || div_i < 0) continue;
    const node& sq = r.at(sq_i);
    if (sq.inputs.size() != 2 || sq.inputs[0] != d || sq.outputs.size() != 1) continue;
    if (is_op(sq, "Pow") ? !r.scalar_near(sq.inputs[1], 2.0, 1e-6) : sq.inputs[1] != d) continue;
    const int var_i = r.sole_consumer(sq.outputs[0]);
    if (var_i < 0 || !is_op(r.at(var_i), "ReduceMean") || !reduces_last_axis(r, r.at(var_i), rank) ||
        r.at(var_i).inputs[0] != sq.outputs[0])
      continue;
    const int var = r.at(var_i).outputs[0];
    const int add_eps_i = r.sole_consumer(var);
    if (add_eps_i < 0 || !is_op(r.at(add_eps_i), "Add")) continue;
    const tensor* eps = r.constant(other_operand(r.at(add_eps_i), var));
    if (!eps || eps->numel() != 1 || !is_float(eps->type())) continue;
    const double epsilon = eps->as_double(0);
    if (!(epsilon >= 0 && epsilon < 1)) continue;
    const int sqrt_i = r.sole_consumer(r.at(add_eps_i).outputs[0]);
    if (sqrt_i < 0 || !is_op(r.at(sqrt_i), "Sqrt")) continue;
    const int sd = r.at(sqrt_i).outputs[0];
    if (r.sole_consumer(sd) != div_i) continue;
    const node& div = r.at(div_i);
    if (div.inputs.size() != 2 || div.inputs[0] != d || div.inputs[1] != sd) continue;
    const int mul_i = r.sole_consumer(div.outputs[0]);
    if (mul_i < 0 || !is_op(r.at(mul_i), "Mul")) continue;
    const int gamma_v = other_operand(r.at(mul_i), div.outputs[0]);
    std::optional<tensor> gamma = last_axis_param(r, gamma_v, rank);
    if (!gamma) continue;
    // The normalised axis must be as long as gamma (when x's shape is not declared, a
    // length-1 axis broadcast up by gamma is the one case this cannot rule out).
    const int64_t h = gamma->numel(), x_last = r.last_dim(x);
    if (x_last >= 0 ? x_last != h : h < 2) continue;
    int last_i = mul_i;
    std::optional<tensor> beta;
    const int add_b_i = r.sole_consumer(r.at(mul_i).outputs[0]);
    if (add_b_i >= 0 && is_op(r.at(add_b_i), "Add")) {
      beta = last_axis_param(r, other_operand(r.at(add_b_i), r.at(mul_i).outputs[0]), rank);
      if (beta && beta->numel() == h && beta->type() == gamma->type()) last_i = add_b_i;
      else beta.reset();
    }
    node ln;
    ln.name = r.at(last_i).name.empty() ? "layernorm" : r.at(last_i).name;
    ln.op_type = "LayerNormalization";
    ln.opset = 17;
    ln.inputs = {x, r.add_constant(ln.name + "::scale", std::move(*gamma))};
    if (beta) ln.inputs.push_back(r.add_constant(ln.name + "::bias", std::move(*beta)));
    ln.outputs = {r.at(last_i).outputs[0]};
    attribute axis;
    axis.type = attribute::kind::integer;
    axis.i = -1;
    ln.attrs["axis"] = axis;
    ln.attrs["epsilon"] = float_attr(static_cast<float>(epsilon));
    for (int k : {mean_i, sub_i, sq_i, var_i, add_eps_i, sqrt_i, div_i, mul_i})
      if (k != last_i) r.kill(k);
    r.at(last_i) = std::move(ln);
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

// Conv (or FusedConv without an activation) whose sole reader is Add(conv, z), z not a constant,
// then optionally an activation -> FusedConv(x, W, B, z) with that activation: the residual
// connections of ResNet and MobileNetV2 blocks, added as each block of the product is stored.
// The fused node takes the Add's place (z may be computed between the two). Shapes need not be
// known: the kernel adds a z of another shape as Add would (broadcasting).
void fuse_residual_add(rewriter& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    const int ci = static_cast<int>(i);
    const node& c = r.at(ci);
    const bool plain_fused = c.domain == "com.gpugrid" && c.op_type == "FusedConv" && !c.has_attr("activation");
    if (!r.alive(ci) || !(is_op(c, "Conv") || plain_fused)) continue;
    if (c.outputs.size() != 1 || c.inputs.size() < 2 || c.inputs.size() > 3) continue;
    const int out = c.outputs[0];
    const int add_i = r.sole_consumer(out);
    if (add_i < 0 || !is_op(r.at(add_i), "Add") || r.at(add_i).inputs.size() != 2 || r.at(add_i).outputs.size() != 1)
      continue;
    const node& add = r.at(add_i);
    const int z = add.inputs[0] == out ? add.inputs[1] : add.inputs[0];
    if (z < 0 || z == out || r.constant(z)) continue;
    node f = c;
    f.op_type = "FusedConv";
    f.domain = "com.gpugrid";
    f.inputs.resize(3, -1);
    f.inputs.push_back(z);
    f.outputs = add.outputs;
    if (f.name.empty()) f.name = add.name;
    std::map<std::string, attribute> attrs;
    const int act_i = r.sole_consumer(add.outputs[0]);
    if (act_i >= 0 && r.at(act_i).inputs[0] == add.outputs[0] && as_activation(r, r.at(act_i), &attrs)) {
      f.outputs = r.at(act_i).outputs;
      for (auto& [k, v] : attrs) f.attrs[k] = v;
      r.kill(act_i);
    }
    r.at(add_i) = std::move(f);
    r.kill(ci);
  }
  r.finish();
}

}  // namespace

status fuse_operators(graph& g, bool residual) {
  rewriter r(g);
  fold_batchnorm_into_conv(r);
  fuse_gelu(r);
  fuse_gelu_tanh(r);
  fuse_layernorm(r);
  fuse_bias_and_activation(r);
  fuse_silu(r);
  if (residual) fuse_residual_add(r);
  return status::ok();
}

}  // namespace gpugrid
