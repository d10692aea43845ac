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

const float inf = std::numeric_limits<float>::infinity();

void set_i(node& n, const std::string& key, int64_t v) {
  attribute a;
  a.type = attribute::kind::integer;
  a.i = v;
  n.attrs[key] = a;
}
void set_s(node& n, const std::string& key, const std::string& v) {
  attribute a;
  a.type = attribute::kind::string;
  a.s = v;
  n.attrs[key] = a;
}

node op(const std::string& type, std::map<std::string, int64_t> ints = {}, int opset = 18, size_t outs = 1) {
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
tensor i64(shape_t s, std::vector<int64_t> v) { return tensor::from_vector<int64_t>(std::move(s), v); }
tensor i32(shape_t s, std::vector<int32_t> v) { return tensor::from_vector<int32_t>(std::move(s), v); }
tensor axes(std::vector<int64_t> v) { return i64({static_cast<int64_t>(v.size())}, v); }

void check_close(const std::vector<float>& got, const std::vector<double>& want, double rtol = 1e-5,
                 double atol = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << " want " << want[i]);
    if (std::isnan(want[i])) {
      CHECK(std::isnan(got[i]));
    } else if (std::isinf(want[i])) {
      CHECK(got[i] == static_cast<float>(want[i]));
    } else {
      CHECK(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]));
    }
  }
}

// [3, 2, 2] holding 1..12 (the ONNX operator docs' example).
tensor x3() { return f32({3, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}); }

}  // namespace

TEST_CASE("ReduceSum over axes, keepdims, negative axes, all", "[reduce]") {
  tensor y = run1(op("ReduceSum", {{"keepdims", 1}}), {x3(), axes({1})});
  CHECK(y.shape() == shape_t{3, 1, 2});
  CHECK(values<float>(y) == std::vector<float>{4, 6, 12, 14, 20, 22});
  y = run1(op("ReduceSum", {{"keepdims", 0}}), {x3(), axes({-2})});
  CHECK(y.shape() == shape_t{3, 2});
  CHECK(values<float>(y) == std::vector<float>{4, 6, 12, 14, 20, 22});
  // Absent axes: reduce everything.
  y = run1(op("ReduceSum", {{"keepdims", 0}}), {x3()});
  CHECK(y.shape() == shape_t{});
  CHECK(values<float>(y) == std::vector<float>{78});
  y = run1(op("ReduceSum"), {x3(), axes({})});
  CHECK(y.shape() == shape_t{1, 1, 1});
  CHECK(values<float>(y) == std::vector<float>{78});
  // Innermost kept, outer reduced: column sums.
  y = run1(op("ReduceSum", {{"keepdims", 0}}), {x3(), axes({0})});
  CHECK(values<float>(y) == std::vector<float>{15, 18, 21, 24});
  // Last axis.
  y = run1(op("ReduceSum", {{"keepdims", 0}}), {x3(), axes({2})});
  CHECK(values<float>(y) == std::vector<float>{3, 7, 11, 15, 19, 23});
  // Duplicate axes count once.
  y = run1(op("ReduceSum", {{"keepdims", 0}}), {x3(), axes({2, -1})});
  CHECK(values<float>(y) == std::vector<float>{3, 7, 11, 15, 19, 23});
}

TEST_CASE("Reduce noop_with_empty_axes leaves the input (mapped) unreduced", "[reduce]") {
  tensor y = run1(op("ReduceSum", {{"noop_with_empty_axes", 1}}), {x3(), axes({})});
  CHECK(y.shape() == shape_t{3, 2, 2});
  CHECK(values<float>(y) == values<float>(x3()));
  y = run1(op("ReduceSumSquare", {{"noop_with_empty_axes", 1}}), {f32({2}, {-2, 3})});
  CHECK(values<float>(y) == std::vector<float>{4, 9});
  y = run1(op("ReduceL1", {{"noop_with_empty_axes", 1}}), {f32({2}, {-2, 3})});
  CHECK(values<float>(y) == std::vector<float>{2, 3});
  // noop only applies to empty axes.
  y = run1(op("ReduceSum", {{"noop_with_empty_axes", 1}, {"keepdims", 0}}), {x3(), axes({0, 1, 2})});
  CHECK(values<float>(y) == std::vector<float>{78});
}

TEST_CASE("ReduceMean over non-adjacent axes", "[reduce]") {
  // Mean over dims 0 and 2: j=0 -> {1,2,5,6,9,10}, j=1 -> {3,4,7,8,11,12}.
  tensor y = run1(op("ReduceMean", {{"keepdims", 1}}), {x3(), axes({0, 2})});
  CHECK(y.shape() == shape_t{1, 2, 1});
  CHECK(values<float>(y) == std::vector<float>{5.5f, 7.5f});
  y = run1(op("ReduceMean", {{"keepdims", 0}}), {f64({2, 2}, {1, 2, 3, 5})});
  CHECK(values<double>(y) == std::vector<double>{2.75});
}

TEST_CASE("ReduceProd, L1, L2, SumSquare, LogSum, LogSumExp", "[reduce]") {
  tensor x = f32({2, 2}, {1, -2, 3, -4});
  auto r = [&](const char* name, const tensor& in) {
    return values<float>(run1(op(name, {{"keepdims", 0}}), {in, axes({1})}));
  };
  CHECK(r("ReduceProd", x) == std::vector<float>{-2, -12});
  CHECK(r("ReduceL1", x) == std::vector<float>{3, 7});
  check_close(r("ReduceL2", x), {std::sqrt(5.0), 5.0});
  CHECK(r("ReduceSumSquare", x) == std::vector<float>{5, 25});
  tensor p = f32({2, 2}, {1, 2, 3, 4});
  check_close(r("ReduceLogSum", p), {std::log(3.0), std::log(7.0)});
  check_close(r("ReduceLogSumExp", p), {2.313261687518223, 4.313261687518223});
  // Stable for large inputs; +inf and all -inf rows follow NumPy.
  check_close(r("ReduceLogSumExp", f32({3, 2}, {1000, 1000, inf, 1, -inf, -inf})), {1000.6931471805599, inf, -inf});
  check_close(r("ReduceMax", x), {1, 3});
  check_close(r("ReduceMin", x), {-2, -4});
}

TEST_CASE("Reduce integer types", "[reduce]") {
  tensor y = run1(op("ReduceSum", {{"keepdims", 0}}), {i32({3}, {2147483647, 1, 1})});
  CHECK(values<int32_t>(y) == std::vector<int32_t>{-2147483647});  // wraps like NumPy
  y = run1(op("ReduceMean", {{"keepdims", 0}}), {i64({2, 2}, {1, 2, -3, -4}), axes({1})});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{1, -3});  // truncates toward zero
  y = run1(op("ReduceMax", {{"keepdims", 0}}), {i64({2, 2}, {1, 7, -3, -4}), axes({0})});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{1, 7});
  y = run1(op("ReduceProd", {{"keepdims", 0}}), {i32({4}, {1, -2, 3, 4})});
  CHECK(values<int32_t>(y) == std::vector<int32_t>{-24});
  y = run1(op("ReduceL2", {{"keepdims", 0}}), {i64({2}, {3, 4})});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{5});
  y = run1(op("ReduceMin", {{"keepdims", 0}}), {tensor::from_vector<uint8_t>({3}, {7, 200, 3})});
  CHECK(values<uint8_t>(y) == std::vector<uint8_t>{3});
  y = run1(op("ReduceMax", {{"keepdims", 0}}), {tensor::from_vector<int8_t>({3}, {-7, -100, -3})});
  CHECK(values<int8_t>(y) == std::vector<int8_t>{-3});
  y = run1(op("ReduceMax", {{"keepdims", 0}}), {tensor::from_vector<bool>({3}, {false, true, false})});
  CHECK(y.type() == dtype::boolean);
  CHECK(y.as_int64(0) == 1);
}

TEST_CASE("Reduce NaN propagation and empty reductions", "[reduce]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  tensor y = run1(op("ReduceMax", {{"keepdims", 0}}), {f32({2, 3}, {1, nan, 3, 4, 5, 6}), axes({1})});
  check_close(values<float>(y), {std::nan(""), 6});
  y = run1(op("ReduceMin", {{"keepdims", 0}}), {f32({3}, {nan, 1, 2})});
  CHECK(std::isnan(values<float>(y)[0]));
  tensor empty = f32({0, 3}, {});
  check_close(values<float>(run1(op("ReduceMax", {{"keepdims", 0}}), {empty, axes({0})})), {-inf, -inf, -inf});
  check_close(values<float>(run1(op("ReduceMin", {{"keepdims", 0}}), {empty, axes({0})})), {inf, inf, inf});
  check_close(values<float>(run1(op("ReduceSum", {{"keepdims", 0}}), {empty, axes({0})})), {0, 0, 0});
  check_close(values<float>(run1(op("ReduceProd", {{"keepdims", 0}}), {empty, axes({0})})), {1, 1, 1});
  check_close(values<float>(run1(op("ReduceLogSumExp", {{"keepdims", 0}}), {empty, axes({0})})), {-inf, -inf, -inf});
  CHECK(std::isnan(values<float>(run1(op("ReduceMean", {{"keepdims", 0}}), {empty}))[0]));
  CHECK(values<int32_t>(run1(op("ReduceMin", {{"keepdims", 0}}), {i32({0}, {})}))[0] ==
        std::numeric_limits<int32_t>::max());
  CHECK(values<int32_t>(run1(op("ReduceMean", {{"keepdims", 0}}), {i32({0}, {})}))[0] == 0);
  tensor no_bools = tensor::zeros(dtype::boolean, {0});
  CHECK(run1(op("ReduceMin", {{"keepdims", 0}}), {no_bools}).as_int64(0) == 1);  // all of nothing
  CHECK(run1(op("ReduceMax", {{"keepdims", 0}}), {no_bools}).as_int64(0) == 0);  // any of nothing
  // Reducing the non-empty axis of an empty tensor gives an empty tensor.
  y = run1(op("ReduceSum", {{"keepdims", 1}}), {empty, axes({1})});
  CHECK(y.shape() == shape_t{0, 1});
}

TEST_CASE("Reduce on a scalar and float16", "[reduce]") {
  tensor y = run1(op("ReduceSum"), {tensor::scalar<float>(2.5f)});
  CHECK(y.shape() == shape_t{});
  CHECK(values<float>(y) == std::vector<float>{2.5f});
  tensor h = tensor::zeros(dtype::f16, {2, 2});
  for (int i = 0; i < 4; ++i) h.data<half>()[i] = half(static_cast<float>(i + 1));
  y = run1(op("ReduceMean", {{"keepdims", 0}}), {h, axes({0})});
  REQUIRE(y.type() == dtype::f16);
  CHECK(static_cast<float>(y.data<half>()[0]) == 2.0f);
  CHECK(static_cast<float>(y.data<half>()[1]) == 3.0f);
}

TEST_CASE("Reduce matches a brute-force reference on many axis sets, threaded", "[reduce]") {
  thread_pool pool(2);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1, 1);
  const shape_t shape{5, 3, 1, 64, 7};
  tensor x = tensor::zeros(dtype::f32, shape);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = dist(rng);
  const int64_t rank = 5;
  for (int mask = 1; mask < (1 << rank); ++mask) {
    std::vector<int64_t> ax;
    for (int d = 0; d < rank; ++d)
      if (mask & (1 << d)) ax.push_back(d);
    // Brute force: output index from the kept coordinates.
    shape_t out_shape;
    for (int d = 0; d < rank; ++d) out_shape.push_back((mask & (1 << d)) ? 1 : shape[d]);
    std::vector<double> sum(static_cast<size_t>(num_elements(out_shape)), 0.0);
    std::vector<double> mx(sum.size(), -1e300);
    for (int64_t i = 0; i < x.numel(); ++i) {
      int64_t rem = i, o = 0, mul = 1;
      for (int d = rank - 1; d >= 0; --d) {
        int64_t c = rem % shape[d];
        rem /= shape[d];
        if (!(mask & (1 << d))) { o += c * mul; }
        mul *= out_shape[d];
      }
      sum[o] += x.data<float>()[i];
      mx[o] = std::max<double>(mx[o], x.data<float>()[i]);
    }
    INFO("axes mask " << mask);
    tensor s = run1(op("ReduceSum"), {x, axes(ax)}, &pool);
    CHECK(s.shape() == out_shape);
    check_close(values<float>(s), sum, 1e-5, 1e-5);
    tensor m = run1(op("ReduceMax"), {x, axes(ax)}, &pool);
    check_close(values<float>(m), mx, 0, 0);
  }
}

TEST_CASE("Reduce errors", "[reduce]") {
  CHECK_THAT(run_error(op("ReduceSum"), {x3(), axes({3})}), Catch::Contains("axis 3 is out of range"));
  CHECK_THAT(run_error(op("ReduceMean"), {x3(), axes({-4})}), Catch::Contains("out of range"));
  CHECK_THAT(run_error(op("ReduceSum"), {x3(), f32({1}, {1})}), Catch::Contains("axes must be int64"));
  CHECK_THAT(run_error(op("ReduceSum"), {x3(), axes({0}), axes({0})}), Catch::Contains("expects 1 to 2 inputs"));
  CHECK_THAT(run_error(op("ReduceSum"), {tensor::from_vector<bool>({2}, {true, false})}),
             Catch::Contains("does not support input type"));
  CHECK_THAT(run_error(op("ReduceSum"), {}), Catch::Contains("expects 1 to 2 inputs"));
}

TEST_CASE("ArgMax / ArgMin", "[reduce]") {
  tensor x = f32({2, 2}, {2, 1, 3, 10});
  tensor y = run1(op("ArgMax", {{"axis", 0}}), {x});
  CHECK(y.type() == dtype::i64);
  CHECK(y.shape() == shape_t{1, 2});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{1, 1});
  y = run1(op("ArgMax", {{"axis", -1}, {"keepdims", 0}}), {x});
  CHECK(y.shape() == shape_t{2});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{0, 1});
  y = run1(op("ArgMin", {{"axis", 1}}), {x});
  CHECK(values<int64_t>(y) == std::vector<int64_t>{1, 0});
  tensor ties = f32({1, 4}, {1, 3, 3, 0});
  CHECK(values<int64_t>(run1(op("ArgMax", {{"axis", 1}}), {ties})) == std::vector<int64_t>{1});
  CHECK(values<int64_t>(run1(op("ArgMax", {{"axis", 1}, {"select_last_index", 1}}), {ties})) == std::vector<int64_t>{2});
  tensor mins = i32({4}, {5, 0, 7, 0});
  CHECK(values<int64_t>(run1(op("ArgMin"), {mins})) == std::vector<int64_t>{1});
  CHECK(values<int64_t>(run1(op("ArgMin", {{"select_last_index", 1}}), {mins})) == std::vector<int64_t>{3});
  // NaN wins, as NumPy's argmax.
  tensor nan = f32({3}, {1, std::numeric_limits<float>::quiet_NaN(), 5});
  CHECK(values<int64_t>(run1(op("ArgMax"), {nan})) == std::vector<int64_t>{1});
  // Middle axis of [2, 3, 2].
  tensor m = f32({2, 3, 2}, {0, 9, 5, 1, 2, 3, 7, 0, 1, 8, 7, 2});
  CHECK(values<int64_t>(run1(op("ArgMax", {{"axis", 1}, {"keepdims", 0}}), {m})) == std::vector<int64_t>{1, 0, 0, 1});
  CHECK_THAT(run_error(op("ArgMax", {{"axis", 2}}), {x}), Catch::Contains("axis 2 is out of range"));
  CHECK_THAT(run_error(op("ArgMax", {{"axis", 0}}), {f32({0, 2}, {})}), Catch::Contains("empty axis"));
}

TEST_CASE("Softmax / LogSoftmax / Hardmax basics", "[reduce]") {
  tensor x = f32({1, 3}, {1, 2, 3});
  check_close(values<float>(run1(op("Softmax", {}, 13), {x})), {0.09003057317038046, 0.24472847105479767, 0.6652409557748219});
  check_close(values<float>(run1(op("LogSoftmax", {}, 13), {x})), {-2.40760596444438, -1.4076059644443801, -0.4076059644443803});
  check_close(values<float>(run1(op("Softmax", {}, 13), {f32({2}, {1000, 1001})})), {0.2689414213699951, 0.7310585786300049});
  check_close(values<float>(run1(op("Softmax", {}, 13), {f32({2}, {-inf, 0})})), {0, 1});
  check_close(values<float>(run1(op("LogSoftmax", {}, 13), {f32({2}, {-inf, 0})})), {-inf, 0});
  // Outputs near zero keep their relative accuracy even for large inputs (rows and columns).
  const double tiny = -std::log1p(std::exp(-20.0));
  check_close(values<float>(run1(op("LogSoftmax", {}, 13), {f32({2}, {1000, 1020})})), {-20 + tiny, tiny}, 1e-5, 0);
  check_close(values<float>(run1(op("LogSoftmax", {{"axis", 0}}, 13), {f32({2, 2}, {1000, 0, 1020, 0})})),
              {-20 + tiny, -std::log(2.0), tiny, -std::log(2.0)}, 1e-5, 0);
  check_close(values<float>(run1(op("Softmax", {}, 13), {f32({2}, {std::nanf(""), 0})})), {std::nan(""), std::nan("")});
  check_close(values<float>(run1(op("Hardmax", {}, 13), {f32({2, 3}, {3, 1, 3, 0, 5, 2})})), {1, 0, 0, 0, 1, 0});
  // Probabilities under the smallest normal float come out as zero, never subnormal (a later
  // product reading subnormals is many times slower), through the vector body and the tail.
  {
    std::vector<float> row(19);
    for (size_t i = 0; i < row.size(); ++i) row[i] = -5.f * static_cast<float>(i);  // e^-90: 8e-40
    auto sm = values<float>(run1(op("Softmax", {}, 13), {f32({1, 19}, row)}));
    for (size_t i = 0; i < sm.size(); ++i) {
      INFO("i " << i << " " << sm[i]);
      CHECK((sm[i] == 0.f || std::fpclassify(sm[i]) == FP_NORMAL));
      if (i < 17) CHECK(std::fabs(sm[i] - std::exp(-5.0 * i) * (1 - std::exp(-5.0))) < 1e-6 * (1 + std::exp(-5.0 * i)));
    }
    CHECK(sm[18] == 0.f);  // e^-90
  }
  // float64
  tensor d = run1(op("Softmax", {}, 13), {f64({3}, {1, 2, 3})});
  CHECK(std::fabs(values<double>(d)[2] - 0.6652409557748219) < 1e-12);
}

TEST_CASE("Softmax axis semantics before and after opset 13", "[reduce]") {
  tensor x = f32({2, 2}, {1, 2, 3, 4});
  // Opset 13: along axis 0 only (columns).
  check_close(values<float>(run1(op("Softmax", {{"axis", 0}}, 13), {x})),
              {0.11920292202211755, 0.11920292202211755, 0.8807970779778823, 0.8807970779778823});
  // Opset 11: coerced to 2-D at axis 0, i.e. normalized over all four elements.
  double s = std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(4.0);
  check_close(values<float>(run1(op("Softmax", {{"axis", 0}}, 11), {x})),
              {std::exp(1.0) / s, std::exp(2.0) / s, std::exp(3.0) / s, std::exp(4.0) / s});
  // Opset 11 default axis 1 on [2, 1, 2]: rows of 2.
  tensor x3d = f32({2, 1, 2}, {1, 2, 3, 4});
  check_close(values<float>(run1(op("Softmax", {}, 11), {x3d})),
              {0.2689414213699951, 0.7310585786300049, 0.2689414213699951, 0.7310585786300049});
  // Hardmax opset 11 flattens: one 1 per coerced row.
  check_close(values<float>(run1(op("Hardmax", {{"axis", 0}}, 11), {f32({2, 2}, {1, 9, 9, 2})})), {0, 1, 0, 0});
  CHECK_THAT(run_error(op("Softmax", {{"axis", 2}}, 13), {x}), Catch::Contains("axis 2 is out of range"));
  CHECK_THAT(run_error(op("Softmax", {}, 13), {i32({2}, {1, 2})}), Catch::Contains("does not support input type"));
}

TEST_CASE("Softmax long rows and strided axes match a double reference, threaded", "[reduce]") {
  thread_pool pool(2);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-30, 30);
  for (shape_t shape : {shape_t{7, 1000}, shape_t{3, 50, 9}, shape_t{64, 33}}) {
    for (int axis : {-1, 1}) {
      tensor x = tensor::zeros(dtype::f32, shape);
      for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = dist(rng);
      const int64_t r = static_cast<int64_t>(shape.size());
      const int64_t a = axis < 0 ? axis + r : axis;
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < a; ++d) outer *= shape[d];
      for (int64_t d = a + 1; d < r; ++d) inner *= shape[d];
      const int64_t n = shape[a];
      std::vector<double> sm(static_cast<size_t>(x.numel())), lsm(sm.size());
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          double m = -1e300, s = 0;
          for (int64_t i = 0; i < n; ++i) m = std::max<double>(m, x.data<float>()[(o * n + i) * inner + j]);
          for (int64_t i = 0; i < n; ++i) s += std::exp(x.data<float>()[(o * n + i) * inner + j] - m);
          for (int64_t i = 0; i < n; ++i) {
            const int64_t k = (o * n + i) * inner + j;
            sm[k] = std::exp(x.data<float>()[k] - m) / s;
            lsm[k] = x.data<float>()[k] - m - std::log(s);
          }
        }
      INFO("shape " << shape_str(shape) << " axis " << axis);
      check_close(values<float>(run1(op("Softmax", {{"axis", axis}}, 13), {x}, &pool)), sm, 1e-5, 1e-7);
      check_close(values<float>(run1(op("LogSoftmax", {{"axis", axis}}, 13), {x}, &pool)), lsm, 1e-5, 1e-5);
    }
  }
}

TEST_CASE("CumSum", "[reduce]") {
  tensor x = f32({5}, {1, 2, 3, 4, 5});
  tensor ax = i64({}, {0});
  CHECK(values<float>(run1(op("CumSum"), {x, ax})) == std::vector<float>{1, 3, 6, 10, 15});
  CHECK(values<float>(run1(op("CumSum", {{"exclusive", 1}}), {x, ax})) == std::vector<float>{0, 1, 3, 6, 10});
  CHECK(values<float>(run1(op("CumSum", {{"reverse", 1}}), {x, ax})) == std::vector<float>{15, 14, 12, 9, 5});
  CHECK(values<float>(run1(op("CumSum", {{"reverse", 1}, {"exclusive", 1}}), {x, ax})) ==
        std::vector<float>{14, 12, 9, 5, 0});
  tensor m = i32({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(values<int32_t>(run1(op("CumSum"), {m, i32({}, {0})})) == std::vector<int32_t>{1, 2, 3, 5, 7, 9});
  CHECK(values<int32_t>(run1(op("CumSum"), {m, i64({1}, {-1})})) == std::vector<int32_t>{1, 3, 6, 4, 9, 15});
  CHECK_THAT(run_error(op("CumSum"), {m, i64({}, {2})}), Catch::Contains("axis 2 is out of range"));
  CHECK_THAT(run_error(op("CumSum"), {m, f32({}, {0})}), Catch::Contains("axis must be int32 or int64"));
  CHECK_THAT(run_error(op("CumSum"), {m}), Catch::Contains("expects 2 inputs"));
}

TEST_CASE("TopK", "[reduce]") {
  tensor x = f32({3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  auto out = run(op("TopK", {}, 11, 2), {x, i64({1}, {3})});
  CHECK(out[0].shape() == shape_t{3, 3});
  CHECK(values<float>(out[0]) == std::vector<float>{3, 2, 1, 7, 6, 5, 11, 10, 9});
  CHECK(values<int64_t>(out[1]) == std::vector<int64_t>{3, 2, 1, 3, 2, 1, 3, 2, 1});
  // Smallest along axis 0.
  out = run(op("TopK", {{"axis", 0}, {"largest", 0}}, 11, 2), {x, i64({1}, {2})});
  CHECK(values<float>(out[0]) == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(values<int64_t>(out[1]) == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1});
  // Ties go to the lower index, both ways.
  tensor t = i64({4}, {3, 1, 3, 1});
  out = run(op("TopK", {}, 11, 2), {t, i64({1}, {2})});
  CHECK(values<int64_t>(out[0]) == std::vector<int64_t>{3, 3});
  CHECK(values<int64_t>(out[1]) == std::vector<int64_t>{0, 2});
  out = run(op("TopK", {{"largest", 0}}, 11, 2), {t, i64({1}, {3})});
  CHECK(values<int64_t>(out[0]) == std::vector<int64_t>{1, 1, 3});
  CHECK(values<int64_t>(out[1]) == std::vector<int64_t>{1, 3, 0});
  // K = 0 gives empty outputs; K > dim and K < 0 fail.
  out = run(op("TopK", {}, 11, 2), {x, i64({1}, {0})});
  CHECK(out[0].shape() == shape_t{3, 0});
  CHECK_THAT(run_error(op("TopK", {}, 11, 2), {x, i64({1}, {5})}), Catch::Contains("K (5) is larger"));
  CHECK_THAT(run_error(op("TopK", {}, 11, 2), {x, i64({1}, {-1})}), Catch::Contains("non-negative"));
  CHECK_THAT(run_error(op("TopK", {{"axis", 2}}, 11, 2), {x, i64({1}, {1})}), Catch::Contains("out of range"));
}

namespace {
tensor einsum(const std::string& eq, const std::vector<tensor>& in) {
  node n = make_node("Einsum", 1, 12);
  set_s(n, "equation", eq);
  return run1(n, in);
}
std::string einsum_error(const std::string& eq, const std::vector<tensor>& in) {
  node n = make_node("Einsum", 1, 12);
  set_s(n, "equation", eq);
  return run_error(n, in);
}
}  // namespace

TEST_CASE("Einsum", "[reduce]") {
  tensor a = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  tensor b = f32({3, 2}, {1, 0, 0, 1, 1, 1});
  tensor y = einsum("ij->ji", {a});
  CHECK(y.shape() == shape_t{3, 2});
  CHECK(values<float>(y) == std::vector<float>{1, 4, 2, 5, 3, 6});
  CHECK(values<float>(einsum("ji", {a})) == std::vector<float>{1, 4, 2, 5, 3, 6});  // implicit: sorted labels
  CHECK(values<float>(einsum("ij, jk -> ik", {a, b})) == std::vector<float>{4, 5, 10, 11});
  CHECK(values<float>(einsum("ij,jk", {a, b})) == std::vector<float>{4, 5, 10, 11});
  CHECK(values<float>(einsum("ij->i", {a})) == std::vector<float>{6, 15});
  CHECK(values<float>(einsum("ij->", {a})) == std::vector<float>{21});
  tensor v = f32({3}, {1, 2, 3});
  CHECK(values<float>(einsum("i,i", {v, v})) == std::vector<float>{14});
  CHECK(values<float>(einsum("i,j->ij", {v, f32({2}, {1, 10})})) == std::vector<float>{1, 10, 2, 20, 3, 30});
  tensor sq = f32({3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(values<float>(einsum("ii->i", {sq})) == std::vector<float>{1, 5, 9});
  CHECK(values<float>(einsum("ii", {sq})) == std::vector<float>{15});
  // Batched diagonal with an ellipsis.
  tensor bsq = f32({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(values<float>(einsum("...ii->...i", {bsq})) == std::vector<float>{1, 4, 5, 8});
  // Batched matmul and ellipsis broadcasting ([2,1,2] x [1,2,1]).
  tensor l = f32({2, 1, 2}, {1, 2, 3, 4});
  tensor rr = f32({1, 2, 1}, {10, 100});
  y = einsum("...ij,...jk->...ik", {l, rr});
  CHECK(y.shape() == shape_t{2, 1, 1});
  CHECK(values<float>(y) == std::vector<float>{210, 430});
  y = einsum("bij,bjk->bik", {l, f32({2, 2, 1}, {1, 1, 2, 0})});
  CHECK(values<float>(y) == std::vector<float>{3, 6});
  // A batched product big enough for the blocked kernels (partial tiles in every direction).
  {
    const int64_t B = 3, I = 13, J = 37, K = 20;
    std::vector<float> av(B * I * J), bv(B * J * K);
    for (size_t t = 0; t < av.size(); ++t) av[t] = static_cast<float>((t * 7919) % 23) / 11.f - 1.f;
    for (size_t t = 0; t < bv.size(); ++t) bv[t] = static_cast<float>((t * 104729) % 19) / 9.f - 1.f;
    y = einsum("bij,bjk->bik", {f32({B, I, J}, av), f32({B, J, K}, bv)});
    REQUIRE(y.shape() == shape_t{B, I, K});
    const std::vector<float> got = values<float>(y);
    for (int64_t bb = 0; bb < B; ++bb)
      for (int64_t i = 0; i < I; ++i)
        for (int64_t k = 0; k < K; ++k) {
          double want = 0;
          for (int64_t j = 0; j < J; ++j) want += double(av[(bb * I + i) * J + j]) * bv[(bb * J + j) * K + k];
          CHECK(std::abs(got[(bb * I + i) * K + k] - want) <= 1e-4 * (1 + std::abs(want)));
        }
  }
  // Three operands.
  tensor c = f32({2, 2}, {1, 0, 0, 2});
  CHECK(values<float>(einsum("ij,jk,kl->il", {a, b, c})) == std::vector<float>{4, 10, 10, 22});
  // Integers.
  CHECK(values<int64_t>(einsum("i,i->", {i64({3}, {1, 2, 3}), i64({3}, {4, 5, 6})})) == std::vector<int64_t>{32});
  CHECK_THAT(einsum_error("ij,jk->ik", {a}), Catch::Contains("2 operand terms but the node has 1 inputs"));
  CHECK_THAT(einsum_error("ij,jk->ik", {a, a}), Catch::Contains("mismatch"));
  CHECK_THAT(einsum_error("ijk->i", {a}), Catch::Contains("rank 2"));
  CHECK_THAT(einsum_error("i1->i", {a}), Catch::Contains("invalid character"));
  CHECK_THAT(einsum_error("ij->iz", {a}), Catch::Contains("not in any input"));
}
