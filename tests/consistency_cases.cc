#include "tests/consistency_cases.h"

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
  (void)attr_is;
  return v;
}

}  // namespace gpugrid
