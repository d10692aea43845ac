#include "tests/consistency_cases.h"

#include <cmath>
#include <random>

#include "engine/op_runner.h"

namespace gpugrid {

namespace {

tensor random_f32(shape_t shape, uint32_t seed, float lo = -2.f, float hi = 2.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  tensor t = tensor::zeros(dtype::f32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

attribute attr_s(const std::string& s) { attribute a; a.type = attribute::kind::string; a.s = s; return a; }
attribute attr_i(int64_t i) { attribute a; a.type = attribute::kind::integer; a.i = i; return a; }
attribute attr_f(float f) { attribute a; a.type = attribute::kind::floating; a.f = f; return a; }
attribute attr_is(std::vector<int64_t> v) { attribute a; a.type = attribute::kind::ints; a.ints = std::move(v); return a; }

consistency_case mk(const std::string& label, const std::string& op, std::vector<tensor> inputs,
                    const std::string& domain = "") {
  consistency_case c;
  c.label = label;
  c.n = make_node(op);
  c.n.domain = domain;
  c.inputs = std::move(inputs);
  return c;
}

}  // namespace

std::vector<consistency_case> consistency_cases() {
  std::vector<consistency_case> v;
  uint32_t seed = 1;
  // Binary elementwise: same shape, scalar, bias-like and general broadcasting.
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) {
    v.push_back(mk(std::string(op) + " same", op, {random_f32({4, 33}, seed++), random_f32({4, 33}, seed++, 0.5f, 2.f)}));
    v.push_back(mk(std::string(op) + " bias", op, {random_f32({2, 3, 17}, seed++), random_f32({17}, seed++, 0.5f, 2.f)}));
    v.push_back(mk(std::string(op) + " general", op, {random_f32({2, 1, 5}, seed++), random_f32({3, 1}, seed++, 0.5f, 2.f)}));
  }
  v.push_back(mk("Pow", "Pow", {random_f32({64}, seed++, 0.1f, 3.f), random_f32({64}, seed++, -2.f, 2.f)}));
  for (const char* op : {"Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Erf", "Gelu"})
    v.push_back(mk(op, op, {random_f32({3, 1000}, seed++)}));
  v.push_back(mk("Silu", "Silu", {random_f32({3, 1000}, seed++)}, "com.gpugrid"));
  for (const char* op : {"Log", "Sqrt", "Reciprocal"}) v.push_back(mk(op, op, {random_f32({1000}, seed++, 0.1f, 4.f)}));
  // MatMul family.
  v.push_back(mk("MatMul 2d", "MatMul", {random_f32({7, 33}, seed++), random_f32({33, 19}, seed++)}));
  v.push_back(mk("MatMul batched", "MatMul", {random_f32({2, 3, 7, 16}, seed++), random_f32({2, 3, 16, 5}, seed++)}));
  v.push_back(mk("MatMul weight", "MatMul", {random_f32({2, 9, 16}, seed++), random_f32({16, 12}, seed++)}));
  v.back().constant_inputs = {1};
  v.push_back(mk("MatMul bcast", "MatMul", {random_f32({2, 1, 4, 8}, seed++), random_f32({3, 8, 5}, seed++)}));
  v.push_back(mk("MatMul vec", "MatMul", {random_f32({8}, seed++), random_f32({8, 5}, seed++)}));
  {
    auto c = mk("FusedMatMul gelu", "FusedMatMul", {random_f32({2, 9, 16}, seed++), random_f32({16, 12}, seed++), random_f32({12}, seed++)}, "com.gpugrid");
    c.n.attrs["activation"] = attr_s("Gelu");
    c.constant_inputs = {1, 2};
    v.push_back(c);
  }
  {
    auto c = mk("Gemm transB", "Gemm", {random_f32({5, 8}, seed++), random_f32({6, 8}, seed++), random_f32({6}, seed++)});
    c.n.attrs["transB"] = attr_i(1);
    c.n.attrs["alpha"] = attr_f(0.5f);
    c.n.attrs["beta"] = attr_f(2.f);
    v.push_back(c);
  }
  {
    auto c = mk("FusedGemm relu", "FusedGemm", {random_f32({5, 8}, seed++), random_f32({8, 6}, seed++), random_f32({1, 6}, seed++)}, "com.gpugrid");
    c.n.attrs["activation"] = attr_s("Relu");
    v.push_back(c);
  }
  auto ints = [](std::vector<int64_t> x) { return tensor::from_vector<int64_t>({static_cast<int64_t>(x.size())}, x); };
  auto with_const = [](consistency_case c, std::vector<int> idx) { c.constant_inputs = std::move(idx); return c; };
  // Views and data movement.
  v.push_back(with_const(mk("Reshape", "Reshape", {random_f32({2, 3, 4}, seed++), ints({4, -1})}), {1}));
  v.push_back(mk("Flatten", "Flatten", {random_f32({2, 3, 4}, seed++)}));
  v.push_back(with_const(mk("Squeeze", "Squeeze", {random_f32({2, 1, 4}, seed++), ints({1})}), {1}));
  v.push_back(with_const(mk("Unsqueeze", "Unsqueeze", {random_f32({2, 4}, seed++), ints({0, 3})}), {1}));
  v.push_back(mk("Identity", "Identity", {random_f32({5}, seed++)}));
  {
    auto c = mk("Transpose 4d", "Transpose", {random_f32({2, 3, 4, 5}, seed++)});
    c.n.attrs["perm"] = attr_is({0, 2, 1, 3});
    v.push_back(c);
  }
  {
    auto c = mk("Concat axis1", "Concat", {random_f32({2, 3, 4}, seed++), random_f32({2, 5, 4}, seed++)});
    c.n.attrs["axis"] = attr_i(1);
    v.push_back(c);
  }
  {
    auto c = with_const(mk("Split", "Split", {random_f32({2, 7}, seed++), ints({3, 4})}), {1});
    c.n.attrs["axis"] = attr_i(1);
    c.n.outputs = {0, 1};
    c.num_outputs = 2;
    v.push_back(c);
  }
  v.push_back(with_const(mk("Slice steps", "Slice", {random_f32({6, 8}, seed++), ints({1, -1}), ints({5, 0}), ints({0, 1}), ints({2, -2})}), {1, 2, 3, 4}));
  v.push_back(with_const(mk("Expand", "Expand", {random_f32({3, 1}, seed++), ints({2, 3, 4})}), {1}));
  {
    tensor idx = tensor::from_vector<int64_t>({2, 2}, {0, 4, -1, 2});
    v.push_back(mk("Gather axis0", "Gather", {random_f32({5, 6}, seed++), idx}));
  }
  {
    tensor cond = tensor::from_vector<bool>({3, 1}, {true, false, true});
    v.push_back(mk("Where", "Where", {cond, random_f32({3, 4}, seed++), random_f32({4}, seed++)}));
  }
  {
    auto c = mk("Cast f32->i64", "Cast", {random_f32({10}, seed++, -5.f, 5.f)});
    c.n.attrs["to"] = attr_i(7);
    v.push_back(c);
  }
  // Convolution and pooling.
  {
    auto c = mk("Conv 3x3 pad", "Conv", {random_f32({2, 3, 9, 9}, seed++), random_f32({4, 3, 3, 3}, seed++), random_f32({4}, seed++)});
    c.n.attrs["pads"] = attr_is({1, 1, 1, 1});
    c.n.attrs["strides"] = attr_is({2, 2});
    c.constant_inputs = {1, 2};
    v.push_back(c);
  }
  {
    auto c = mk("Conv 1x1", "Conv", {random_f32({2, 8, 5, 5}, seed++), random_f32({6, 8, 1, 1}, seed++)});
    c.constant_inputs = {1};
    v.push_back(c);
  }
  {
    auto c = mk("Conv grouped dilated", "Conv", {random_f32({1, 4, 8, 8}, seed++), random_f32({6, 2, 3, 3}, seed++)});
    c.n.attrs["group"] = attr_i(2);
    c.n.attrs["dilations"] = attr_is({2, 2});
    c.n.attrs["auto_pad"] = attr_s("SAME_UPPER");
    v.push_back(c);
  }
  {
    auto c = mk("FusedConv depthwise relu6", "FusedConv", {random_f32({2, 5, 7, 7}, seed++), random_f32({5, 1, 3, 3}, seed++), random_f32({5}, seed++)}, "com.gpugrid");
    c.n.attrs["group"] = attr_i(5);
    c.n.attrs["pads"] = attr_is({1, 1, 1, 1});
    c.n.attrs["activation"] = attr_s("Clip");
    c.n.attrs["activation_alpha"] = attr_f(0.f);
    c.n.attrs["activation_beta"] = attr_f(6.f);
    v.push_back(c);
  }
  {
    auto c = mk("MaxPool 3x3 s2", "MaxPool", {random_f32({2, 3, 9, 9}, seed++)});
    c.n.attrs["kernel_shape"] = attr_is({3, 3});
    c.n.attrs["strides"] = attr_is({2, 2});
    c.n.attrs["pads"] = attr_is({1, 1, 1, 1});
    v.push_back(c);
  }
  {
    auto c = mk("AveragePool ceil", "AveragePool", {random_f32({1, 2, 7, 7}, seed++)});
    c.n.attrs["kernel_shape"] = attr_is({2, 2});
    c.n.attrs["strides"] = attr_is({2, 2});
    c.n.attrs["ceil_mode"] = attr_i(1);
    v.push_back(c);
  }
  v.push_back(mk("GlobalAveragePool", "GlobalAveragePool", {random_f32({2, 3, 5, 6}, seed++)}));
  v.push_back(mk("GlobalMaxPool", "GlobalMaxPool", {random_f32({2, 3, 5, 6}, seed++)}));
  // Normalisation and reductions.
  v.push_back(mk("Softmax last", "Softmax", {random_f32({3, 4, 50}, seed++)}));
  {
    auto c = mk("Softmax axis1", "Softmax", {random_f32({3, 4, 5}, seed++)});
    c.n.attrs["axis"] = attr_i(1);
    v.push_back(c);
  }
  v.push_back(mk("LogSoftmax", "LogSoftmax", {random_f32({4, 33}, seed++)}));
  v.push_back(mk("LayerNormalization", "LayerNormalization", {random_f32({2, 5, 64}, seed++), random_f32({64}, seed++), random_f32({64}, seed++)}));
  v.push_back(mk("BatchNormalization", "BatchNormalization", {random_f32({2, 3, 4, 4}, seed++), random_f32({3}, seed++), random_f32({3}, seed++),
                                                              random_f32({3}, seed++), random_f32({3}, seed++, 0.5f, 2.f)}));
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax"}) {
    v.push_back(with_const(mk(std::string(op) + " last", op, {random_f32({3, 4, 20}, seed++), ints({-1})}), {1}));
    auto c = with_const(mk(std::string(op) + " middle", op, {random_f32({3, 4, 5, 6}, seed++), ints({1, 2})}), {1});
    c.n.attrs["keepdims"] = attr_i(0);
    v.push_back(c);
  }
  {
    tensor lo = tensor::scalar<float>(-0.5f), hi = tensor::scalar<float>(0.75f);
    v.push_back(with_const(mk("Clip", "Clip", {random_f32({100}, seed++), lo, hi}), {1, 2}));
  }
  v.push_back(mk("LeakyRelu", "LeakyRelu", {random_f32({100}, seed++)}));
  v.push_back(mk("HardSigmoid", "HardSigmoid", {random_f32({100}, seed++, -5.f, 5.f)}));
  v.push_back(mk("HardSwish", "HardSwish", {random_f32({100}, seed++, -5.f, 5.f)}));
  {
    tensor scales = tensor::from_vector<float>({4}, {1, 1, 2, 2});
    auto c = with_const(mk("Resize nearest", "Resize", {random_f32({1, 2, 4, 5}, seed++), tensor(), scales}), {2});
    c.n.attrs["mode"] = attr_s("nearest");
    v.push_back(c);
    auto l = with_const(mk("Resize linear", "Resize", {random_f32({1, 2, 4, 5}, seed++), tensor(), scales}), {2});
    l.n.attrs["mode"] = attr_s("linear");
    v.push_back(l);
  }
  {
    tensor x = random_f32({40}, seed++);
    x.data<float>()[3] = std::nanf("");
    x.data<float>()[7] = INFINITY;
    x.data<float>()[9] = -INFINITY;
    v.push_back(mk("IsNaN", "IsNaN", {x}));
    v.push_back(mk("IsInf", "IsInf", {x}));
    v.push_back(mk("Not", "Not", {tensor::from_vector<bool>({4}, {true, false, false, true})}));
    for (const char* op : {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}) {
      tensor a = tensor::from_vector<int64_t>({2, 3}, {1, 5, 3, -2, 0, 7});
      tensor b = tensor::from_vector<int64_t>({3}, {1, 4, 7});
      v.push_back(mk(std::string(op) + " i64", op, {a, b}));
    }
    tensor p = tensor::from_vector<bool>({2, 2}, {true, false, true, true});
    tensor q = tensor::from_vector<bool>({2}, {false, true});
    v.push_back(mk("And", "And", {p, q}));
    v.push_back(mk("Or", "Or", {p, q}));
  }
  return v;
}

}  // namespace gpugrid
