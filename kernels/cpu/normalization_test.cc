#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "engine/op_runner.h"
#include "engine/thread_pool.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;

namespace {

void set_i(node& n, const std::string& key, int64_t v) {
  attribute a;
  a.type = attribute::kind::integer;
  a.i = v;
  n.attrs[key] = a;
}
void set_f(node& n, const std::string& key, float v) {
  attribute a;
  a.type = attribute::kind::floating;
  a.f = v;
  n.attrs[key] = a;
}
void set_ints(node& n, const std::string& key, std::vector<int64_t> v) {
  attribute a;
  a.type = attribute::kind::ints;
  a.ints = std::move(v);
  n.attrs[key] = a;
}

node op(const std::string& type, std::map<std::string, int64_t> ints = {}, int opset = 17, size_t outs = 1) {
  node n = make_node(type, outs, opset);
  for (auto& [k, v] : ints) set_i(n, k, v);
  return n;
}

std::vector<tensor> run(node n, const std::vector<tensor>& inputs, thread_pool* pool = nullptr) {
  auto r = run_single_op(cpu::registry(), std::move(n), inputs, pool);
  if (!r) FAIL(r.error().message());
  return std::move(r).value();
}
tensor run1(node n, const std::vector<tensor>& inputs, thread_pool* pool = nullptr) {
  return run(std::move(n), inputs, pool)[0];
}
std::string run_error(node n, const std::vector<tensor>& inputs) {
  auto r = run_single_op(cpu::registry(), std::move(n), inputs);
  if (r) return "";
  return r.error().message();
}

template <typename T>
std::vector<T> values(const tensor& t) {
  REQUIRE(t.type() == dtype_of<T>::value);
  std::vector<T> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.raw(), v.size() * sizeof(T));
  return v;
}

tensor f32(shape_t s, std::vector<float> v) { return tensor::from_vector<float>(std::move(s), v); }
tensor f64(shape_t s, std::vector<double> v) { return tensor::from_vector<double>(std::move(s), v); }

template <typename T>
void check_close(const std::vector<T>& got, const std::vector<double>& want, double rtol = 1e-5, double atol = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << " want " << want[i]);
    if (std::isnan(want[i])) CHECK(std::isnan(static_cast<double>(got[i])));
    else CHECK(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]));
  }
}

}  // namespace

TEST_CASE("BatchNormalization inference", "[norm]") {
  // The ONNX docs' example: per-channel (x - mean) / sqrt(var + eps) * scale + B.
  tensor x = f32({1, 2, 1, 3}, {-1, 0, 1, 2, 3, 4});
  tensor s = f32({2}, {1.0f, 1.5f}), b = f32({2}, {0, 1}), mean = f32({2}, {0, 3}), var = f32({2}, {1, 1.5f});
  const double a0 = 0.9999950000374997, a1 = 1.2247407889290967;
  for (int opset : {9, 15}) {
    tensor y = run1(op("BatchNormalization", {}, opset), {x, s, b, mean, var});
    CHECK(y.shape() == x.shape());
    check_close(values<float>(y), {-a0, 0, a0, 1 - a1, 1, 1 + a1});
  }
  // float64, custom epsilon, rank 2 (no spatial dims).
  node n = op("BatchNormalization", {}, 15);
  set_f(n, "epsilon", 0.5f);
  tensor y = run1(n, {f64({2, 1}, {1, 3}), f64({1}, {2}), f64({1}, {1}), f64({1}, {1}), f64({1}, {1.5})});
  check_close(values<double>(y), {1.0, 1 + 2 * 2 / std::sqrt(2.0)}, 1e-7);
}

TEST_CASE("BatchNormalization errors", "[norm]") {
  tensor x = f32({1, 2, 1, 3}, {-1, 0, 1, 2, 3, 4});
  tensor p2 = f32({2}, {1, 1}), p3 = f32({3}, {1, 1, 1});
  CHECK_THAT(run_error(op("BatchNormalization", {}, 15), {x, p3, p2, p2, p2}),
             Catch::Contains("scale has 3 elements"));
  CHECK_THAT(run_error(op("BatchNormalization", {}, 15), {x, p2, p2, p2, p3}), Catch::Contains("var has 3 elements"));
  CHECK_THAT(run_error(op("BatchNormalization", {{"training_mode", 1}}, 15), {x, p2, p2, p2, p2}),
             Catch::Contains("training_mode=1 is not supported"));
  CHECK_THAT(run_error(op("BatchNormalization", {}, 15), {x, p2, p2, p2}), Catch::Contains("expects 5 inputs"));
  CHECK_THAT(run_error(op("BatchNormalization", {}, 15, 3), {x, p2, p2, p2, p2}), Catch::Contains("training-mode"));
}

TEST_CASE("LayerNormalization with Mean and InvStdDev outputs", "[norm]") {
  tensor x = f32({2, 3}, {1, 2, 3, 4, 6, 8});
  const double i0 = 1.2247356859083902, i1 = 0.6123712875007069;  // 1/sqrt(2/3+eps), 1/sqrt(8/3+eps)
  auto out = run(op("LayerNormalization", {}, 17, 3), {x, f32({3}, {1, 1, 1}), f32({3}, {0, 0, 0})});
  REQUIRE(out.size() == 3);
  check_close(values<float>(out[0]), {-i0, 0, i0, -2 * i1, 0, 2 * i1});
  CHECK(out[1].shape() == shape_t{2, 1});
  check_close(values<float>(out[1]), {2, 6});
  check_close(values<float>(out[2]), {i0, i1});
  // Scale and bias per element; bias omitted.
  tensor y = run1(op("LayerNormalization"), {x, f32({3}, {1, 2, 0.5f}), f32({3}, {1, 1, 1})});
  check_close(values<float>(y), {1 - i0, 1, 1 + 0.5 * i0, 1 - 2 * i1, 1, 1 + i1});
  y = run1(op("LayerNormalization"), {x, f32({3}, {1, 2, 0.5f})});
  check_close(values<float>(y), {-i0, 0, 0.5 * i0, -2 * i1, 0, i1});
  // Scale broadcast from shape [1].
  y = run1(op("LayerNormalization"), {x, f32({1}, {2})});
  check_close(values<float>(y), {-2 * i0, 0, 2 * i0, -4 * i1, 0, 4 * i1});
  // axis 0 normalizes everything: mean 4, var 17/3 (stats shape [1, 1]).
  out = run(op("LayerNormalization", {{"axis", 0}}, 17, 2), {x, f32({2, 3}, {1, 1, 1, 1, 1, 1})});
  CHECK(out[1].shape() == shape_t{1, 1});
  const double inv = 1 / std::sqrt(17.0 / 3 + 1e-5);
  check_close(values<float>(out[0]), {-3 * inv, -2 * inv, -inv, 0, 2 * inv, 4 * inv});
  // float64 data with stash_type 11 keeps double statistics.
  out = run(op("LayerNormalization", {{"stash_type", 11}}, 17, 2), {f64({2}, {1, 3}), f64({2}, {1, 1})});
  CHECK(out[1].type() == dtype::f64);
  check_close(values<double>(out[0]), {-1 / std::sqrt(1 + 1e-5), 1 / std::sqrt(1 + 1e-5)}, 1e-12);
}

TEST_CASE("LayerNormalization only computes wanted outputs", "[norm]") {
  node n = op("LayerNormalization", {}, 17, 3);
  n.outputs[1] = -1;  // Mean omitted
  auto out = run(n, {f32({1, 2}, {0, 2}), f32({2}, {1, 1})});
  CHECK_FALSE(out[1].defined());
  REQUIRE(out[2].defined());
  check_close(values<float>(out[2]), {1 / std::sqrt(1 + 1e-5)});
}

TEST_CASE("LayerNormalization large rows match a double reference, threaded", "[norm]") {
  thread_pool pool(2);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-3, 5);
  const int64_t rows = 64, n = 771;
  tensor x = tensor::zeros(dtype::f32, {rows, n}), s = tensor::zeros(dtype::f32, {n}), b = tensor::zeros(dtype::f32, {n});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = dist(rng) + 100.0f;  // offset mean
  for (int64_t i = 0; i < n; ++i) {
    s.data<float>()[i] = dist(rng);
    b.data<float>()[i] = dist(rng);
  }
  std::vector<double> want(static_cast<size_t>(x.numel()));
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; ++i) m += x.data<float>()[r * n + i];
    m /= n;
    for (int64_t i = 0; i < n; ++i) v += (x.data<float>()[r * n + i] - m) * (x.data<float>()[r * n + i] - m);
    v /= n;
    for (int64_t i = 0; i < n; ++i)
      want[r * n + i] = (x.data<float>()[r * n + i] - m) / std::sqrt(v + 1e-5) * s.data<float>()[i] + b.data<float>()[i];
  }
  check_close(values<float>(run1(op("LayerNormalization"), {x, s, b}, &pool)), want, 1e-4, 1e-4);
}

TEST_CASE("LayerNormalization errors", "[norm]") {
  tensor x = f32({2, 3}, {1, 2, 3, 4, 6, 8});
  CHECK_THAT(run_error(op("LayerNormalization"), {x, f32({2}, {1, 1})}), Catch::Contains("Scale (shape [2])"));
  CHECK_THAT(run_error(op("LayerNormalization", {{"axis", 2}}), {x, f32({3}, {1, 1, 1})}),
             Catch::Contains("axis 2 is out of range"));
  CHECK_THAT(run_error(op("LayerNormalization"), {x}), Catch::Contains("expects 2 to 3 inputs"));
  CHECK_THAT(run_error(op("LayerNormalization"), {x, f32({3}, {1, 1, 1}), f32({4}, {1, 1, 1, 1})}),
             Catch::Contains("B (shape [4])"));
}

TEST_CASE("InstanceNormalization", "[norm]") {
  tensor x = f32({1, 2, 3}, {1, 2, 3, 2, 4, 6});
  const double i0 = 1.2247356859083902, i1 = 0.6123712875007069;
  tensor y = run1(op("InstanceNormalization"), {x, f32({2}, {1, 2}), f32({2}, {0, 1})});
  check_close(values<float>(y), {-i0, 0, i0, 1 - 4 * i1, 1, 1 + 4 * i1});
  CHECK_THAT(run_error(op("InstanceNormalization"), {x, f32({3}, {1, 1, 1}), f32({2}, {0, 1})}),
             Catch::Contains("scale has 3 elements"));
}

TEST_CASE("GroupNormalization", "[norm]") {
  // Two groups of two channels: {1,2,3,4} and {5,6,7,8}, each mean +-2.5, variance 1.25.
  tensor x = f32({1, 4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  const double k = 0.894423613312618;  // 1/sqrt(1.25 + 1e-5)
  node n = op("GroupNormalization", {{"num_groups", 2}}, 18);
  tensor y = run1(n, {x, f32({2}, {1, 2}), f32({2}, {0, 1})});
  check_close(values<float>(y), {-1.5 * k, -0.5 * k, 0.5 * k, 1.5 * k, 1 - 3 * k, 1 - k, 1 + k, 1 + 3 * k});
  // Opset 21: scale and bias per channel.
  n = op("GroupNormalization", {{"num_groups", 2}}, 21);
  y = run1(n, {x, f32({4}, {1, 1, 2, 2}), f32({4}, {0, 0, 1, 1})});
  check_close(values<float>(y), {-1.5 * k, -0.5 * k, 0.5 * k, 1.5 * k, 1 - 3 * k, 1 - k, 1 + k, 1 + 3 * k});
  CHECK_THAT(run_error(op("GroupNormalization", {{"num_groups", 3}}, 18), {x, f32({3}, {1, 1, 1}), f32({3}, {0, 0, 0})}),
             Catch::Contains("not divisible by num_groups 3"));
  CHECK_THAT(run_error(op("GroupNormalization", {{"num_groups", 2}}, 21), {x, f32({2}, {1, 1}), f32({2}, {0, 0})}),
             Catch::Contains("one per channel"));
}

TEST_CASE("LpNormalization", "[norm]") {
  tensor x = f32({2, 2}, {3, 4, 0, 0});
  check_close(values<float>(run1(op("LpNormalization"), {x})), {0.6, 0.8, 0, 0});
  check_close(values<float>(run1(op("LpNormalization", {{"p", 1}}), {x})), {3.0 / 7, 4.0 / 7, 0, 0});
  check_close(values<float>(run1(op("LpNormalization", {{"axis", 0}}), {f32({2, 2}, {3, 1, 4, 0})})), {0.6, 1, 0.8, 0});
  CHECK_THAT(run_error(op("LpNormalization", {{"p", 3}}), {x}), Catch::Contains("p must be 1 or 2"));
}

TEST_CASE("MeanVarianceNormalization", "[norm]") {
  const double k = 0.8944271901999158;  // 1 / (sqrt(1.25) + 1e-9)
  tensor y = run1(op("MeanVarianceNormalization", {}, 13), {f32({1, 1, 1, 4}, {1, 2, 3, 4})});
  check_close(values<float>(y), {-1.5 * k, -0.5 * k, 0.5 * k, 1.5 * k});
  // Default axes [0, 2, 3]: channels are separate.
  y = run1(op("MeanVarianceNormalization", {}, 13), {f32({1, 2, 1, 2}, {1, 3, 10, 10})});
  check_close(values<float>(y), {-1, 1, 0, 0}, 1e-5, 1e-6);
  node n = op("MeanVarianceNormalization", {}, 13);
  set_ints(n, "axes", {1});
  y = run1(n, {f32({2, 2}, {1, 3, 5, 5})});
  check_close(values<float>(y), {-1, 1, 0, 0}, 1e-5, 1e-6);
  CHECK_THAT(run_error(op("MeanVarianceNormalization", {}, 13), {f32({2, 2}, {1, 2, 3, 4})}),
             Catch::Contains("out of range"));
}

TEST_CASE("LRN", "[norm]") {
  // alpha / size = 1, beta = 1, bias = 1: y = x / (1 + sum of squares of neighbours).
  node n = op("LRN", {{"size", 3}});
  set_f(n, "alpha", 3.0f);
  set_f(n, "beta", 1.0f);
  tensor y = run1(n, {f32({1, 3, 1, 1}, {1, 2, 3})});
  check_close(values<float>(y), {1.0 / 6, 2.0 / 15, 3.0 / 14});
  // size 2: window [c, c + 1].
  n = op("LRN", {{"size", 2}});
  set_f(n, "alpha", 2.0f);
  set_f(n, "beta", 1.0f);
  y = run1(n, {f32({1, 3, 1, 1}, {1, 2, 3})});
  check_close(values<float>(y), {1.0 / 6, 2.0 / 14, 3.0 / 10});
  CHECK_THAT(run_error(op("LRN"), {f32({1, 3, 1, 1}, {1, 2, 3})}), Catch::Contains("size"));
}
