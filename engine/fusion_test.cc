// Fusion rewrites: each pattern becomes its single op, the fused session's results match the
// unfused graph, and near-misses (an extra reader, a wrong constant, another axis) stay as
// they are.
#include "engine/fusion.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "engine/op_runner.h"
#include "engine/session.h"

namespace gpugrid {
namespace {

// Builds a graph node by node; values are named v0, v1, ... in creation order.
struct graph_builder {
  std::shared_ptr<graph> g = std::make_shared<graph>();
  int next = 0;

  graph_builder() { g->opsets[""] = 17; }
  int input(shape_t shape, bool declare_shape = true) {
    int v = g->value_id("in" + std::to_string(g->inputs.size()));
    g->values[v].type = dtype::f32;
    if (declare_shape) {
      std::vector<dim_t> dims;
      for (int64_t d : shape) dims.push_back({d, ""});
      g->values[v].shape = dims;
    }
    g->inputs.push_back(v);
    return v;
  }
  int constant(tensor t) {
    int v = g->value_id("c" + std::to_string(next++));
    g->values[v].type = t.type();
    g->initializers[v] = std::move(t);
    return v;
  }
  int scalar(float f) { return constant(tensor::scalar<float>(f)); }
  int op(const std::string& type, std::vector<int> inputs, std::map<std::string, attribute> attrs = {}) {
    node n = make_node(type, 1, 17);
    n.name = type + "_" + std::to_string(g->nodes.size());
    n.inputs = std::move(inputs);
    n.outputs = {g->value_id("v" + std::to_string(next++))};
    n.attrs = std::move(attrs);
    g->nodes.push_back(n);
    return n.outputs[0];
  }
  void output(int v) { g->outputs.push_back(v); }
};

tensor random_tensor(shape_t shape, uint32_t seed, float lo = -2.f, float hi = 2.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  tensor t = tensor::zeros(dtype::f32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(gen);
  return t;
}

struct fused_result {
  std::vector<std::string> ops;  // op types of the optimised graph, in order
};

// Runs g unoptimised and optimised on the same inputs; checks the outputs agree and returns
// the optimised graph's op types.
fused_result run_both(const std::shared_ptr<graph>& g, const std::vector<tensor>& inputs, double tol = 2e-5) {
  session_options plain;
  plain.optimize = false;
  plain.threads = 1;
  session_options opt = plain;
  opt.optimize = true;
  auto s0 = session::create(g, plain);
  if (!s0) FAIL(s0.error().message());
  auto s1 = session::create(g, opt);
  if (!s1) FAIL(s1.error().message());
  auto want = (*s0)->run(inputs);
  if (!want) FAIL(want.error().message());
  auto got = (*s1)->run(inputs);
  if (!got) FAIL(got.error().message());
  REQUIRE(got->size() == want->size());
  for (size_t o = 0; o < got->size(); ++o) {
    const tensor& a = (*got)[o];
    const tensor& b = (*want)[o];
    REQUIRE(a.shape() == b.shape());
    double worst = 0;
    for (int64_t k = 0; k < a.numel(); ++k) {
      double d = std::fabs(a.as_double(k) - b.as_double(k)) / (1 + std::fabs(b.as_double(k)));
      worst = std::max(worst, d);
    }
    INFO("output " << o);
    CHECK(worst <= tol);
  }
  fused_result r;
  for (const node& n : (*s1)->model().nodes) r.ops.push_back(n.op_type);
  return r;
}

const node* find_op(const graph& g, const std::string& type) {
  for (const node& n : g.nodes)
    if (n.op_type == type) return &n;
  return nullptr;
}

int64_t count(const std::vector<std::string>& ops, const std::string& type) {
  return std::count(ops.begin(), ops.end(), type);
}

attribute keepdims(int64_t k) {
  attribute a;
  a.type = attribute::kind::integer;
  a.i = k;
  return a;
}

struct layernorm_spec {
  bool declare_shape = true;
  bool square_by_mul = false;
  bool with_beta = true;
  int64_t axis = -1;
  float exponent = 2.f;
  bool extra_reader = false;   // x - mean is also a graph output
  bool rank2_gamma = false;    // gamma of shape [1, H]
  bool eps_as_input = false;   // eps is a graph input, not a constant
};

// The unfused LayerNorm as PyTorch exports it below opset 17 (axes as the canonical input).
graph_builder layernorm_graph(const layernorm_spec& s, int64_t h = 16) {
  graph_builder b;
  int x = b.input({2, 3, h}, s.declare_shape);
  int axes = b.constant(tensor::from_vector<int64_t>({1}, {s.axis}));
  int mean = b.op("ReduceMean", {x, axes});
  int d = b.op("Sub", {x, mean});
  int sq = s.square_by_mul ? b.op("Mul", {d, d}) : b.op("Pow", {d, b.scalar(s.exponent)});
  int var = b.op("ReduceMean", {sq, axes});
  int eps = s.eps_as_input ? b.input({}) : b.scalar(1e-5f);
  int sd = b.op("Sqrt", {b.op("Add", {var, eps})});
  int n = b.op("Div", {d, sd});
  shape_t gshape = s.rank2_gamma ? shape_t{1, h} : shape_t{h};
  int y = b.op("Mul", {b.constant(random_tensor(gshape, 7, 0.5f, 1.5f)), n});
  if (s.with_beta) y = b.op("Add", {y, b.constant(random_tensor({h}, 8))});
  b.output(y);
  if (s.extra_reader) b.output(d);
  return b;
}

std::vector<tensor> layernorm_inputs(const layernorm_spec& s, int64_t h = 16) {
  std::vector<tensor> in = {random_tensor({2, 3, h}, 3, -3.f, 5.f)};
  if (s.eps_as_input) in.push_back(tensor::scalar<float>(1e-5f));
  return in;
}

}  // namespace

TEST_CASE("unfused LayerNorm over the last axis becomes LayerNormalization", "[fusion]") {
  for (int variant = 0; variant < 5; ++variant) {
    layernorm_spec s;
    if (variant == 1) s.square_by_mul = true;
    if (variant == 2) s.declare_shape = false;
    if (variant == 3) s.with_beta = false;
    if (variant == 4) { s.axis = 2; s.rank2_gamma = true; }
    INFO("variant " << variant);
    graph_builder b = layernorm_graph(s);
    CHECK(b.g->nodes.size() == (s.with_beta ? 9u : 8u));
    fused_result r = run_both(b.g, layernorm_inputs(s));
    REQUIRE(r.ops == std::vector<std::string>{"LayerNormalization"});
    session_options opt;
    opt.threads = 1;
    auto sess = session::create(b.g, opt);
    REQUIRE(sess);
    const node* ln = find_op((*sess)->model(), "LayerNormalization");
    REQUIRE(ln);
    CHECK(ln->attr_int("axis", 0) == -1);
    CHECK(ln->attr_float("epsilon", 0) == Approx(1e-5f));
    CHECK(ln->inputs.size() == (s.with_beta ? 3u : 2u));
  }
}

TEST_CASE("LayerNorm near-misses are left unfused and still right", "[fusion]") {
  for (int variant = 0; variant < 5; ++variant) {
    layernorm_spec s;
    if (variant == 0) s.extra_reader = true;  // x - mean has a second reader
    if (variant == 1) s.exponent = 3.f;       // not a square
    if (variant == 2) s.axis = 1;             // not the last axis
    if (variant == 3) s.eps_as_input = true;  // eps is not a constant
    if (variant == 4) s.declare_shape = false, s.rank2_gamma = true;  // gamma [1, H], rank of x unknown
    INFO("variant " << variant);
    graph_builder b = layernorm_graph(s, variant == 2 ? 3 : 16);
    fused_result r = run_both(b.g, layernorm_inputs(s, variant == 2 ? 3 : 16));
    CHECK(count(r.ops, "LayerNormalization") == 0);
    CHECK(count(r.ops, "ReduceMean") == 2);
  }
  // A gamma whose length differs from the declared last axis (it broadcasts x's axis of 1).
  graph_builder b;
  int x = b.input({2, 1});
  int axes = b.constant(tensor::from_vector<int64_t>({1}, {-1}));
  int d = b.op("Sub", {x, b.op("ReduceMean", {x, axes})});
  int var = b.op("ReduceMean", {b.op("Pow", {d, b.scalar(2.f)}), axes});
  int n = b.op("Div", {d, b.op("Sqrt", {b.op("Add", {var, b.scalar(1e-5f)})})});
  b.output(b.op("Add", {b.op("Mul", {n, b.constant(random_tensor({4}, 1))}), b.constant(random_tensor({4}, 2))}));
  fused_result r = run_both(b.g, {random_tensor({2, 1}, 5)});
  CHECK(count(r.ops, "LayerNormalization") == 0);
}

TEST_CASE("LayerNorm fusion keeps keepdims=0 reductions unfused", "[fusion]") {
  graph_builder b;
  int x = b.input({4, 8});
  int axes = b.constant(tensor::from_vector<int64_t>({1}, {-1}));
  int mean = b.op("ReduceMean", {x, axes}, {{"keepdims", keepdims(0)}});
  b.output(mean);
  fused_result r = run_both(b.g, {random_tensor({4, 8}, 1)});
  CHECK(r.ops == std::vector<std::string>{"ReduceMean"});
}

namespace {

// 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) in the shapes exporters write.
graph_builder gelu_tanh_graph(int form, float cubic = 0.044715f, bool extra_reader = false) {
  graph_builder b;
  int x0 = b.input({3, 40});
  int x = b.op("Relu", {x0});  // an intermediate x, as after a MatMul
  int cube;
  if (form == 1) cube = b.op("Mul", {b.op("Mul", {x, x}), x});
  else if (form == 2) cube = b.op("Mul", {x, b.op("Mul", {x, x})});
  else cube = b.op("Pow", {x, b.scalar(3.f)});
  int inner = form == 2 ? b.op("Add", {b.op("Mul", {cube, b.scalar(cubic)}), x})
                        : b.op("Add", {x, b.op("Mul", {b.scalar(cubic), cube})});
  int t = b.op("Tanh", {b.op("Mul", {b.scalar(0.7978845608f), inner})});
  int one_t = b.op("Add", {b.scalar(1.f), t});
  int y;
  if (form == 0) y = b.op("Mul", {b.op("Mul", {b.scalar(0.5f), x}), one_t});   // (0.5 * x) * (1 + t)
  else if (form == 1) y = b.op("Mul", {b.op("Mul", {x, one_t}), b.scalar(0.5f)});  // (x * (1 + t)) * 0.5
  else y = b.op("Mul", {x, b.op("Mul", {one_t, b.scalar(0.5f)})});               // x * ((1 + t) * 0.5)
  b.output(y);
  if (extra_reader) b.output(t);
  return b;
}

}  // namespace

TEST_CASE("tanh GELU becomes Gelu with approximate=tanh", "[fusion]") {
  for (int form = 0; form < 3; ++form) {
    INFO("form " << form);
    graph_builder b = gelu_tanh_graph(form);
    fused_result r = run_both(b.g, {random_tensor({3, 40}, 11, -6.f, 6.f)}, 1e-6);
    REQUIRE(r.ops == std::vector<std::string>{"Relu", "Gelu"});
    session_options opt;
    opt.threads = 1;
    auto sess = session::create(b.g, opt);
    REQUIRE(sess);
    const node* gelu = find_op((*sess)->model(), "Gelu");
    REQUIRE(gelu);
    CHECK(gelu->attr_string("approximate", "none") == "tanh");
  }
}

TEST_CASE("tanh GELU near-misses are left unfused", "[fusion]") {
  // A different cubic coefficient is another function.
  fused_result r = run_both(gelu_tanh_graph(0, 0.05f).g, {random_tensor({3, 40}, 12)});
  CHECK(count(r.ops, "Gelu") == 0);
  CHECK(count(r.ops, "Tanh") == 1);
  // The tanh is also a graph output.
  r = run_both(gelu_tanh_graph(1, 0.044715f, true).g, {random_tensor({3, 40}, 13)});
  CHECK(count(r.ops, "Gelu") == 0);
}

TEST_CASE("erf GELU still becomes exact Gelu", "[fusion]") {
  graph_builder b;
  int x = b.op("Relu", {b.input({4, 8})});
  int e = b.op("Erf", {b.op("Div", {x, b.scalar(1.4142135f)})});
  int y = b.op("Mul", {b.op("Mul", {x, b.op("Add", {e, b.scalar(1.f)})}), b.scalar(0.5f)});
  b.output(y);
  fused_result r = run_both(b.g, {random_tensor({4, 8}, 21, -4.f, 4.f)}, 1e-6);
  CHECK(r.ops == std::vector<std::string>{"Relu", "Gelu"});
  session_options opt;
  opt.threads = 1;
  auto sess = session::create(b.g, opt);
  REQUIRE(sess);
  CHECK(find_op((*sess)->model(), "Gelu")->attr_string("approximate", "none") == "none");
}

namespace {

attribute int_attr(int64_t v) {
  attribute a;
  a.type = attribute::kind::integer;
  a.i = v;
  return a;
}

attribute ints_attr(std::vector<int64_t> v) {
  attribute a;
  a.type = attribute::kind::ints;
  a.ints = std::move(v);
  return a;
}

// The optimised graph as a session on the CPU builds it.
std::shared_ptr<const graph> optimised(const std::shared_ptr<graph>& g) {
  session_options opt;
  opt.threads = 1;
  opt.device = "cpu";
  auto s = session::create(g, opt);
  if (!s) FAIL(s.error().message());
  return std::make_shared<graph>((*s)->model());
}

}  // namespace

TEST_CASE("a residual Add after a Conv, and the activation after it, become the FusedConv's Z", "[fusion]") {
  // x -> Conv -> Add(., z) [-> activation], z computed after the Conv in node order (so the
  // fused node must take the Add's place), in both operand orders, over the GEMM (1x1), Winograd
  // (3x3) and depthwise paths.
  struct variant { int64_t k, group; bool z_first; const char* act; };
  for (variant v : {variant{1, 1, false, ""}, variant{3, 1, true, "Relu"}, variant{3, 16, false, "Clip"},
                    variant{1, 1, true, "Sigmoid"}}) {
    INFO("k " << v.k << " group " << v.group << " act " << v.act);
    graph_builder b;
    int x = b.input({1, 16, 9, 9});
    int y = b.op("Conv", {x, b.constant(random_tensor({16, 16 / v.group, v.k, v.k}, 31)),
                          b.constant(random_tensor({16}, 32))},
                 {{"pads", ints_attr({v.k / 2, v.k / 2, v.k / 2, v.k / 2})}, {"group", int_attr(v.group)}});
    int z = b.op("Tanh", {x});
    int sum = v.z_first ? b.op("Add", {z, y}) : b.op("Add", {y, z});
    if (std::string(v.act) == "Clip") sum = b.op("Clip", {sum, b.scalar(-0.5f), b.scalar(1.f)});
    else if (*v.act) sum = b.op(v.act, {sum});
    b.output(sum);
    fused_result r = run_both(b.g, {random_tensor({1, 16, 9, 9}, 33)}, 1e-5);
    CHECK(r.ops == std::vector<std::string>{"Tanh", "FusedConv"});
    auto g = optimised(b.g);
    const node* f = find_op(*g, "FusedConv");
    REQUIRE(f);
    REQUIRE(f->inputs.size() == 4);
    CHECK(f->inputs[3] == g->nodes[0].outputs[0]);  // the Tanh's output
    CHECK(f->attr_string("activation", "") == v.act);
  }
}

TEST_CASE("residual Add near-misses stay, and a session for a device keeps the Add", "[fusion]") {
  auto base = [](int variant) {
    graph_builder b;
    int x = b.input({1, 8, 6, 6});
    int w = b.constant(random_tensor({8, 8, 1, 1}, 41));
    int y = b.op("Conv", {x, w});
    if (variant == 1) y = b.op("Relu", {y});  // an activation before the Add: not the same
    int z = variant == 2 ? b.constant(random_tensor({1, 8, 1, 1}, 42)) : b.op("Sigmoid", {x});
    int sum = b.op("Add", {y, variant == 3 ? y : z});
    b.output(sum);
    if (variant == 4) b.output(y);  // the Conv's output is read elsewhere too
    return b;
  };
  for (int variant = 1; variant <= 4; ++variant) {
    INFO("variant " << variant);
    fused_result r = run_both(base(variant).g, {random_tensor({1, 8, 6, 6}, 43)}, 1e-5);
    CHECK(count(r.ops, "Add") == 1);
  }
  // The same graph fuses for the CPU, and keeps its Add when the passes run for a device
  // (the CUDA FusedConv takes no Z).
  graph g = *base(0).g;
  graph for_device = g;
  REQUIRE(optimize_graph(g, nullptr, true).ok());
  REQUIRE(optimize_graph(for_device, nullptr, false).ok());
  CHECK(find_op(g, "Add") == nullptr);
  CHECK(find_op(for_device, "Add") != nullptr);
}

}  // namespace gpugrid
