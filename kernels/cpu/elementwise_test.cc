#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "engine/op_runner.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/elementwise.h"

using namespace gpugrid;

namespace {

const float inf = std::numeric_limits<float>::infinity();
const float nan_f = std::numeric_limits<float>::quiet_NaN();

node op(const std::string& type, int opset = 17) { return make_node(type, 1, opset); }

node op_attr_f(const std::string& type, std::map<std::string, float> floats) {
  node n = op(type);
  for (auto& [k, v] : floats) {
    attribute a;
    a.type = attribute::kind::floating;
    a.f = v;
    n.attrs[k] = a;
  }
  return n;
}

node op_attr_i(const std::string& type, const std::string& key, int64_t v) {
  node n = op(type);
  attribute a;
  a.type = attribute::kind::integer;
  a.i = v;
  n.attrs[key] = a;
  return n;
}

node op_attr_s(const std::string& type, const std::string& key, const std::string& v) {
  node n = op(type);
  attribute a;
  a.type = attribute::kind::string;
  a.s = v;
  n.attrs[key] = a;
  return n;
}

tensor run1(node n, const std::vector<tensor>& inputs, thread_pool* pool = nullptr) {
  auto r = run_single_op(cpu::registry(), std::move(n), inputs, pool);
  if (!r) FAIL(r.error().message());
  REQUIRE(r->size() == 1);
  return (*r)[0];
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

std::vector<bool> bools(const tensor& t) {
  REQUIRE(t.type() == dtype::boolean);
  std::vector<bool> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<const uint8_t*>(t.raw())[i] != 0);
  return v;
}

tensor f32(shape_t s, std::vector<float> v) { return tensor::from_vector<float>(std::move(s), v); }
tensor f64(shape_t s, std::vector<double> v) { return tensor::from_vector<double>(std::move(s), v); }
tensor i64(shape_t s, std::vector<int64_t> v) { return tensor::from_vector<int64_t>(std::move(s), v); }
tensor i32(shape_t s, std::vector<int32_t> v) { return tensor::from_vector<int32_t>(std::move(s), v); }
tensor b8(shape_t s, std::vector<bool> v) {
  tensor t = tensor::zeros(dtype::boolean, std::move(s));
  for (size_t i = 0; i < v.size(); ++i) static_cast<uint8_t*>(t.raw())[i] = v[i] ? 1 : 0;
  return t;
}
tensor f16(shape_t s, std::vector<float> v) {
  std::vector<half> h;
  for (float f : v) h.push_back(half(f));
  return tensor::from_vector<half>(std::move(s), h);
}
std::vector<float> f16_values(const tensor& t) {
  std::vector<float> out;
  for (half h : values<half>(t)) out.push_back(static_cast<float>(h));
  return out;
}

void check_close(const std::vector<float>& got, const std::vector<float>& want, float rtol = 1e-6f,
                 float atol = 1e-7f) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    if (std::isnan(want[i])) {
      CHECK(std::isnan(got[i]));
    } else if (std::isinf(want[i])) {
      CHECK(got[i] == want[i]);
    } else {
      CHECK(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]));
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Math helpers

TEST_CASE("fast exp/tanh/erf stay within 1e-6 of libm", "[elementwise]") {
  double worst_exp = 0, worst_tanh = 0, worst_erf = 0;
  for (int i = 0; i <= 400000; ++i) {
    float x = -103.0f + 192.0f * static_cast<float>(i) / 400000.0f;
    double r = std::exp(static_cast<double>(x));
    if (r > 1e-37 && r < 3e38) worst_exp = std::max(worst_exp, std::fabs(cpu::fast_exp(x) - r) / r);
    float t = -10.0f + 20.0f * static_cast<float>(i) / 400000.0f;
    double rt = std::tanh(static_cast<double>(t));
    if (rt != 0) worst_tanh = std::max(worst_tanh, std::fabs(cpu::fast_tanh(t) - rt) / std::fabs(rt));
    double re = std::erf(static_cast<double>(t));
    if (re != 0) worst_erf = std::max(worst_erf, std::fabs(cpu::fast_erf(t) - re) / std::fabs(re));
  }
  double worst_log = 0, worst_log1p = 0;
  for (uint32_t u = 0; u < 0x7f800000u; u += 4099) {  // every float magnitude, subnormals too
    float x;
    std::memcpy(&x, &u, 4);
    double r = std::log(static_cast<double>(x));
    if (r != 0) worst_log = std::max(worst_log, std::fabs(cpu::fast_log(x) - r) / std::fabs(r));
    double r1 = std::log1p(static_cast<double>(x));
    if (r1 != 0 && x < 1e30f) worst_log1p = std::max(worst_log1p, std::fabs(cpu::fast_log1p(x) - r1) / std::fabs(r1));
  }
  CHECK(worst_log < 1e-6);
  CHECK(worst_log1p < 1e-6);
  CHECK(cpu::fast_log(0.0f) == -inf);
  CHECK(std::isnan(cpu::fast_log(-1.0f)));
  CHECK(std::isnan(cpu::fast_log(nan_f)));
  CHECK(cpu::fast_log(inf) == inf);
  CHECK(cpu::fast_log(1.0f) == 0.0f);
  CHECK(cpu::fast_log1p(1e-20f) == 1e-20f);
  CHECK(cpu::fast_log1p(inf) == inf);
  CHECK(cpu::fast_log1p(-1.0f) == -inf);
  CHECK(worst_exp < 1e-6);
  CHECK(worst_tanh < 1e-6);
  CHECK(worst_erf < 1e-6);
  // Tiny inputs keep their relative accuracy.
  CHECK(cpu::fast_tanh(1e-5f) == 1e-5f);
  CHECK(std::fabs(cpu::fast_erf(1e-5f) - 1.1283791671e-5f) < 1e-12f);
  // Edges.
  CHECK(cpu::fast_exp(0.0f) == 1.0f);
  CHECK(cpu::fast_exp(-inf) == 0.0f);
  CHECK(cpu::fast_exp(inf) == inf);
  CHECK(cpu::fast_exp(89.0f) == inf);
  CHECK(cpu::fast_exp(-200.0f) == 0.0f);
  CHECK(std::isnan(cpu::fast_exp(nan_f)));
  CHECK(std::fabs(cpu::fast_exp(-100.0f) - 3.7835059e-44f) <= 2e-45f);  // subnormal result
  CHECK(cpu::fast_tanh(inf) == 1.0f);
  CHECK(cpu::fast_tanh(-inf) == -1.0f);
  CHECK(std::isnan(cpu::fast_tanh(nan_f)));
  CHECK(cpu::fast_erf(inf) == 1.0f);
  CHECK(cpu::fast_erf(-inf) == -1.0f);
  CHECK(std::isnan(cpu::fast_erf(nan_f)));
  CHECK(cpu::sigmoid(-200.0f) == 0.0f);
  CHECK(cpu::sigmoid(200.0f) == 1.0f);
  CHECK(cpu::sigmoid(0.0f) == 0.5f);
  CHECK(std::fabs(cpu::gelu(1.0f) - 0.8413447461f) < 1e-6f);
}

// ---------------------------------------------------------------------------------------------
// Unary

TEST_CASE("unary float ops match hand-checked values", "[elementwise]") {
  tensor x = f32({2, 3}, {-2.0f, -0.5f, 0.0f, 0.5f, 1.0f, 3.0f});
  check_close(values<float>(run1(op("Abs"), {x})), {2, 0.5f, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("Neg"), {x})), {2, 0.5f, -0.0f, -0.5f, -1, -3});
  check_close(values<float>(run1(op("Relu"), {x})), {0, 0, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("Sign"), {x})), {-1, -1, 0, 1, 1, 1});
  check_close(values<float>(run1(op("Exp"), {x})),
              {0.1353352832f, 0.6065306597f, 1, 1.6487212707f, 2.7182818285f, 20.0855369232f});
  check_close(values<float>(run1(op("Sigmoid"), {x})),
              {0.1192029220f, 0.3775406688f, 0.5f, 0.6224593312f, 0.7310585786f, 0.9525741268f});
  check_close(values<float>(run1(op("Tanh"), {x})),
              {-0.9640275801f, -0.4621171573f, 0, 0.4621171573f, 0.7615941560f, 0.9950547537f});
  check_close(values<float>(run1(op("Erf"), {x})),
              {-0.9953222650f, -0.5204998778f, 0, 0.5204998778f, 0.8427007929f, 0.9999779095f});
  check_close(values<float>(run1(op("Softsign"), {x})), {-2.0f / 3, -1.0f / 3, 0, 1.0f / 3, 0.5f, 0.75f});
  check_close(values<float>(run1(op("Softplus"), {x})),
              {0.1269280110f, 0.4740769842f, 0.6931471806f, 0.9740769842f, 1.3132616875f, 3.0485873516f});
  check_close(values<float>(run1(op("HardSwish"), {x})), {-0.3333333333f, -0.2083333333f, 0, 0.2916666667f, 0.6666666667f, 3});
  check_close(values<float>(run1(op("Mish"), {x})),
              {-0.2525014827f, -0.2207437747f, 0, 0.3752452113f, 0.8650983883f, 2.9865350050f});
  check_close(values<float>(run1(op("Gelu"), {x})),
              {-0.0455002639f, -0.1542687694f, 0, 0.3457312306f, 0.8413447461f, 2.9959503059f});
  check_close(values<float>(run1(op_attr_s("Gelu", "approximate", "tanh"), {x})),
              {-0.0454023059f, -0.1542859902f, 0, 0.3457140098f, 0.8411919906f, 2.9963626079f});
  node silu = op("Silu");
  silu.domain = "com.gpugrid";
  check_close(values<float>(run1(silu, {x})),
              {-0.2384058440f, -0.1887703344f, 0, 0.3112296656f, 0.7310585786f, 2.8577223804f});
  check_close(values<float>(run1(op_attr_f("LeakyRelu", {{"alpha", 0.1f}}), {x})), {-0.2f, -0.05f, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("LeakyRelu"), {x})), {-0.02f, -0.005f, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("Elu"), {x})), {-0.8646647168f, -0.3934693403f, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op_attr_f("Elu", {{"alpha", 2.0f}}), {x})), {-1.7293294335f, -0.7869386806f, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("Selu"), {x})),
              {-1.5201664733f, -0.6917581900f, 0, 0.5253505111f, 1.0507010221f, 3.1521030664f});
  check_close(values<float>(run1(op_attr_f("Celu", {{"alpha", 2.0f}}), {x})), {-1.2642411177f, -0.4423984339f, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("HardSigmoid"), {x})), {0.1f, 0.4f, 0.5f, 0.6f, 0.7f, 1});
  check_close(values<float>(run1(op_attr_f("HardSigmoid", {{"alpha", 0.5f}, {"beta", 0.6f}}), {x})),
              {0, 0.35f, 0.6f, 0.85f, 1, 1});
  check_close(values<float>(run1(op("ThresholdedRelu"), {x})), {0, 0, 0, 0, 0, 3});
  check_close(values<float>(run1(op_attr_f("ThresholdedRelu", {{"alpha", 0.2f}}), {x})), {0, 0, 0, 0.5f, 1, 3});
  check_close(values<float>(run1(op("Sin"), {x})),
              {-0.9092974268f, -0.4794255386f, 0, 0.4794255386f, 0.8414709848f, 0.1411200081f});
  check_close(values<float>(run1(op("Cos"), {x})),
              {-0.4161468365f, 0.8775825619f, 1, 0.8775825619f, 0.5403023059f, -0.9899924966f});
  check_close(values<float>(run1(op("Atan"), {x})),
              {-1.1071487178f, -0.4636476090f, 0, 0.4636476090f, 0.7853981634f, 1.2490457724f});
  check_close(values<float>(run1(op("Sinh"), {x})),
              {-3.6268604078f, -0.5210953055f, 0, 0.5210953055f, 1.1752011936f, 10.0178749274f});
  check_close(values<float>(run1(op("Asinh"), {x})),
              {-1.4436354752f, -0.4812118251f, 0, 0.4812118251f, 0.8813735870f, 1.8184464592f});

  tensor p = f32({4}, {0.25f, 1.0f, 4.0f, 0.0f});
  check_close(values<float>(run1(op("Sqrt"), {p})), {0.5f, 1, 2, 0});
  check_close(values<float>(run1(op("Log"), {p})), {-1.3862943611f, 0, 1.3862943611f, -inf});
  check_close(values<float>(run1(op("Reciprocal"), {p})), {4, 1, 0.25f, inf});
  tensor u = f32({3}, {-0.5f, 0.0f, 0.5f});
  check_close(values<float>(run1(op("Asin"), {u})), {-0.5235987756f, 0, 0.5235987756f});
  check_close(values<float>(run1(op("Acos"), {u})), {2.0943951024f, 1.5707963268f, 1.0471975512f});
  check_close(values<float>(run1(op("Atanh"), {u})), {-0.5493061443f, 0, 0.5493061443f});
  check_close(values<float>(run1(op("Tan"), {u})), {-0.5463024898f, 0, 0.5463024898f});
  check_close(values<float>(run1(op("Cosh"), {u})), {1.1276259652f, 1, 1.1276259652f});
  check_close(values<float>(run1(op("Acosh"), {f32({2}, {1.0f, 2.0f})})), {0, 1.3169578969f});
  CHECK(std::isnan(values<float>(run1(op("Sqrt"), {f32({1}, {-1.0f})}))[0]));
}

TEST_CASE("rounding ops round half to even", "[elementwise]") {
  tensor x = f32({8}, {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 2.3f, -2.7f});
  check_close(values<float>(run1(op("Round"), {x})), {-2, -2, -0.0f, 0, 2, 2, 2, -3});
  check_close(values<float>(run1(op("Floor"), {x})), {-3, -2, -1, 0, 1, 2, 2, -3});
  check_close(values<float>(run1(op("Ceil"), {x})), {-2, -1, -0.0f, 1, 2, 3, 3, -2});
}

TEST_CASE("unary ops propagate NaN and handle infinities", "[elementwise]") {
  tensor x = f32({3}, {nan_f, inf, -inf});
  check_close(values<float>(run1(op("Relu"), {x})), {nan_f, inf, 0});
  check_close(values<float>(run1(op("Sigmoid"), {x})), {nan_f, 1, 0});
  check_close(values<float>(run1(op("Tanh"), {x})), {nan_f, 1, -1});
  check_close(values<float>(run1(op("Exp"), {x})), {nan_f, inf, 0});
  check_close(values<float>(run1(op("Gelu"), {x})), {nan_f, inf, -0.0f});
  check_close(values<float>(run1(op("Sign"), {x})), {nan_f, 1, -1});
  check_close(values<float>(run1(op("Mish"), {x})), {nan_f, inf, -0.0f});
  check_close(values<float>(run1(op_attr_s("Gelu", "approximate", "tanh"), {x})), {nan_f, inf, -0.0f});
  node silu = op("Silu");
  silu.domain = "com.gpugrid";
  check_close(values<float>(run1(silu, {x})), {nan_f, inf, -0.0f});
  check_close(values<float>(run1(op("Gelu"), {f32({2}, {-30.0f, 30.0f})})), {-0.0f, 30.0f});
  check_close(values<float>(run1(op("Mish"), {f32({2}, {-20.0f, 30.0f})})), {-4.1223072e-8f, 30.0f});
  check_close(values<float>(run1(op("Softplus"), {x})), {nan_f, inf, 0});
}

TEST_CASE("unary ops on double, float16 and integers", "[elementwise]") {
  tensor d = f64({3}, {-1.0, 0.5, 2.0});
  auto e = values<double>(run1(op("Exp"), {d}));
  CHECK(e[0] == Approx(0.36787944117144233).epsilon(1e-15));
  CHECK(e[2] == Approx(7.38905609893065).epsilon(1e-15));
  auto s = values<double>(run1(op("Sigmoid"), {d}));
  CHECK(s[1] == Approx(0.6224593312018546).epsilon(1e-15));

  tensor h = f16({4}, {-1.0f, 0.0f, 0.5f, 2.0f});
  tensor hr = run1(op("Relu"), {h});
  REQUIRE(hr.type() == dtype::f16);
  check_close(f16_values(hr), {0, 0, 0.5f, 2});
  check_close(f16_values(run1(op("Sigmoid"), {h})), {0.2689414214f, 0.5f, 0.6224593312f, 0.8807970779f}, 1e-3f);

  tensor i = i32({5}, {-3, -1, 0, 2, std::numeric_limits<int32_t>::min()});
  CHECK(values<int32_t>(run1(op("Abs"), {i})) == std::vector<int32_t>{3, 1, 0, 2, std::numeric_limits<int32_t>::min()});
  CHECK(values<int32_t>(run1(op("Neg"), {i})) == std::vector<int32_t>{3, 1, 0, -2, std::numeric_limits<int32_t>::min()});
  CHECK(values<int32_t>(run1(op("Sign"), {i})) == std::vector<int32_t>{-1, -1, 0, 1, -1});
  CHECK(values<int32_t>(run1(op("Relu"), {i})) == std::vector<int32_t>{0, 0, 0, 2, 0});
  tensor u8 = tensor::from_vector<uint8_t>({2}, {0, 200});
  CHECK(values<uint8_t>(run1(op("Abs"), {u8})) == std::vector<uint8_t>{0, 200});
  CHECK(values<uint8_t>(run1(op("Sign"), {u8})) == std::vector<uint8_t>{0, 1});

  CHECK(run_error(op("Exp"), {i32({1}, {1})}).find("does not support input type int32") != std::string::npos);
  CHECK(run_error(op("Relu"), {b8({1}, {true})}).find("bool") != std::string::npos);
  CHECK(run_error(op("Abs"), {}).find("takes 1 input") != std::string::npos);
}

TEST_CASE("IsNaN, IsInf, Not, BitwiseNot", "[elementwise]") {
  tensor x = f32({4}, {1.0f, nan_f, inf, -inf});
  CHECK(bools(run1(op("IsNaN"), {x})) == std::vector<bool>{false, true, false, false});
  CHECK(bools(run1(op("IsInf"), {x})) == std::vector<bool>{false, false, true, true});
  CHECK(bools(run1(op_attr_i("IsInf", "detect_negative", 0), {x})) == std::vector<bool>{false, false, true, false});
  CHECK(bools(run1(op_attr_i("IsInf", "detect_positive", 0), {x})) == std::vector<bool>{false, false, false, true});
  CHECK(bools(run1(op("IsNaN"), {f16({2}, {nan_f, 0.0f})})) == std::vector<bool>{true, false});
  CHECK(bools(run1(op("Not"), {b8({3}, {true, false, true})})) == std::vector<bool>{false, true, false});
  CHECK(values<int32_t>(run1(op("BitwiseNot"), {i32({2}, {0, 5})})) == std::vector<int32_t>{-1, -6});
  CHECK(values<uint8_t>(run1(op("BitwiseNot"), {tensor::from_vector<uint8_t>({2}, {0, 5})})) ==
        std::vector<uint8_t>{255, 250});
  CHECK(!run_error(op("Not"), {f32({1}, {1})}).empty());
  CHECK(!run_error(op("BitwiseNot"), {f32({1}, {1})}).empty());
}

// ---------------------------------------------------------------------------------------------
// Binary

TEST_CASE("binary arithmetic with broadcasting", "[elementwise]") {
  tensor a = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  tensor row = f32({3}, {10, 20, 30});
  tensor col = f32({2, 1}, {100, 200});
  tensor s = f32({}, {2});
  check_close(values<float>(run1(op("Add"), {a, row})), {11, 22, 33, 14, 25, 36});
  check_close(values<float>(run1(op("Add"), {col, a})), {101, 102, 103, 204, 205, 206});
  check_close(values<float>(run1(op("Sub"), {a, s})), {-1, 0, 1, 2, 3, 4});
  check_close(values<float>(run1(op("Sub"), {s, a})), {1, 0, -1, -2, -3, -4});
  check_close(values<float>(run1(op("Mul"), {a, a})), {1, 4, 9, 16, 25, 36});
  check_close(values<float>(run1(op("Div"), {a, row})), {0.1f, 0.1f, 0.1f, 0.4f, 0.25f, 0.2f});
  // [2,1] x [3] -> [2,3] outer product.
  tensor outer = run1(op("Mul"), {col, row});
  CHECK(outer.shape() == shape_t{2, 3});
  check_close(values<float>(outer), {1000, 2000, 3000, 2000, 4000, 6000});
  // 4-D per-channel: [1,2,2,2] + [2,1,1].
  tensor x4 = f32({1, 2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  tensor ch = f32({2, 1, 1}, {10, 20});
  check_close(values<float>(run1(op("Add"), {x4, ch})), {10, 11, 12, 13, 24, 25, 26, 27});
  // Middle-axis broadcast [2,1,2] + [1,3,1] -> [2,3,2].
  tensor m1 = f32({2, 1, 2}, {1, 2, 3, 4});
  tensor m2 = f32({1, 3, 1}, {10, 20, 30});
  tensor mm = run1(op("Add"), {m1, m2});
  CHECK(mm.shape() == shape_t{2, 3, 2});
  check_close(values<float>(mm), {11, 12, 21, 22, 31, 32, 13, 14, 23, 24, 33, 34});
  // Empty tensors broadcast to empty outputs.
  tensor empty = run1(op("Add"), {f32({0, 3}, {}), row});
  CHECK(empty.shape() == shape_t{0, 3});
  // Scalars.
  tensor ss = run1(op("Add"), {s, f32({1}, {3})});
  CHECK(ss.shape() == shape_t{1});
  check_close(values<float>(ss), {5});
}

TEST_CASE("binary ops report bad inputs", "[elementwise]") {
  std::string e = run_error(op("Add"), {f32({2, 3}, {1, 2, 3, 4, 5, 6}), f32({4, 3}, std::vector<float>(12, 0))});
  CHECK(e.find("inputs have shapes [2, 3] and [4, 3], which do not broadcast") != std::string::npos);
  e = run_error(op("Mul"), {f32({1}, {1}), i64({1}, {1})});
  CHECK(e.find("float32 and int64") != std::string::npos);
  CHECK(run_error(op("Add"), {f32({1}, {1})}).find("takes 2 inputs, got 1") != std::string::npos);
  CHECK(!run_error(op("Add"), {b8({1}, {true}), b8({1}, {true})}).empty());
  CHECK(!run_error(op("And"), {f32({1}, {1}), f32({1}, {1})}).empty());
  CHECK(!run_error(op("BitwiseAnd"), {f32({1}, {1}), f32({1}, {1})}).empty());
  CHECK(!run_error(op_attr_s("BitShift", "direction", "LEFT"), {i32({1}, {1}), i32({1}, {1})}).empty());
  CHECK(!run_error(op_attr_s("BitShift", "direction", "UP"), {tensor::from_vector<uint8_t>({1}, {1}),
                                                               tensor::from_vector<uint8_t>({1}, {1})}).empty());
  CHECK(!run_error(op("Where"), {f32({1}, {1}), f32({1}, {1}), f32({1}, {1})}).empty());
  CHECK(!run_error(op("Where"), {b8({1}, {true}), f32({1}, {1}), f64({1}, {1})}).empty());
  e = run_error(op("Where"), {b8({2}, {true, false}), f32({3}, {1, 2, 3}), f32({1}, {1})});
  CHECK(e.find("[2], [3] and [1]") != std::string::npos);
  e = run_error(op("Sum"), {f32({2}, {1, 2}), f32({3}, {1, 2, 3})});
  CHECK(e.find("do not broadcast") != std::string::npos);
  e = run_error(op("Max"), {f32({1}, {1}), i32({1}, {1})});
  CHECK(e.find("int32") != std::string::npos);
  CHECK(!run_error(op("Clip"), {f32({2}, {1, 2}), f32({2}, {0, 1})}).empty());
}

TEST_CASE("integer arithmetic wraps and never traps", "[elementwise]") {
  tensor a = i32({6}, {7, -7, 7, -7, std::numeric_limits<int32_t>::min(), 5});
  tensor b = i32({6}, {2, 2, -2, -2, -1, 0});
  CHECK(values<int32_t>(run1(op("Div"), {a, b})) ==
        std::vector<int32_t>{3, -3, -3, 3, std::numeric_limits<int32_t>::min(), 0});
  CHECK(values<int32_t>(run1(op("Add"), {i32({1}, {std::numeric_limits<int32_t>::max()}), i32({1}, {1})})) ==
        std::vector<int32_t>{std::numeric_limits<int32_t>::min()});
  CHECK(values<int32_t>(run1(op("Mul"), {i32({1}, {65536}), i32({1}, {65536})})) == std::vector<int32_t>{0});
  tensor u16a = tensor::from_vector<uint16_t>({1}, {65535});
  CHECK(values<uint16_t>(run1(op("Mul"), {u16a, u16a})) == std::vector<uint16_t>{1});
  tensor i8a = tensor::from_vector<int8_t>({2}, {100, -128});
  tensor i8b = tensor::from_vector<int8_t>({2}, {100, -1});
  CHECK(values<int8_t>(run1(op("Add"), {i8a, i8b})) == std::vector<int8_t>{-56, 127});
  CHECK(values<int8_t>(run1(op("Sub"), {i8b, i8a})) == std::vector<int8_t>{0, 127});
  // Per-element ops on int64 with broadcasting.
  CHECK(values<int64_t>(run1(op("Sub"), {i64({2, 2}, {10, 20, 30, 40}), i64({2}, {1, 2})})) ==
        std::vector<int64_t>{9, 18, 29, 38});
}

TEST_CASE("Mod follows Python signs with fmod=0 and C with fmod=1", "[elementwise]") {
  tensor a = i32({6}, {-4, 7, 5, 4, -7, 3});
  tensor b = i32({6}, {3, -3, 8, -2, 3, 0});
  CHECK(values<int32_t>(run1(op("Mod"), {a, b})) == std::vector<int32_t>{2, -2, 5, 0, 2, 0});
  CHECK(values<int32_t>(run1(op_attr_i("Mod", "fmod", 1), {a, b})) == std::vector<int32_t>{-1, 1, 5, 0, -1, 0});
  tensor fa = f32({4}, {-4.3f, 7.2f, 5.0f, 4.3f});
  tensor fb = f32({4}, {2.1f, -3.4f, 8.0f, -2.1f});
  check_close(values<float>(run1(op_attr_i("Mod", "fmod", 1), {fa, fb})), {-0.1f, 0.4f, 5.0f, 0.1f}, 1e-5f, 1e-6f);
  check_close(values<float>(run1(op("Mod"), {fa, fb})), {2.0f, -3.0f, 5.0f, -2.0f}, 1e-5f, 1e-6f);
  CHECK(values<int32_t>(run1(op("Mod"), {i32({1}, {std::numeric_limits<int32_t>::min()}), i32({1}, {-1})})) ==
        std::vector<int32_t>{0});
  tensor u = tensor::from_vector<uint8_t>({2}, {250, 7});
  tensor v = tensor::from_vector<uint8_t>({2}, {7, 250});
  CHECK(values<uint8_t>(run1(op("Mod"), {u, v})) == std::vector<uint8_t>{5, 7});
  check_close(f16_values(run1(op_attr_i("Mod", "fmod", 1), {f16({2}, {-4.0f, 7.0f}), f16({2}, {3.0f, -3.0f})})),
              {-1.0f, 1.0f});
}

TEST_CASE("Pow with mixed base and exponent types", "[elementwise]") {
  tensor x = f32({3}, {1, 2, 3});
  check_close(values<float>(run1(op("Pow"), {x, f32({3}, {4, 5, 6})})), {1, 32, 729});
  check_close(values<float>(run1(op("Pow"), {x, f32({}, {2})})), {1, 4, 9});
  check_close(values<float>(run1(op("Pow"), {f32({3}, {4, -0.0f, -inf}), f32({}, {0.5f})})), {2, 0, inf});
  check_close(values<float>(run1(op("Pow"), {x, i64({1}, {3})})), {1, 8, 27});
  check_close(values<float>(run1(op("Pow"), {x, i32({3}, {-1, 0, 2})})), {1, 1, 9});
  tensor xi = i64({4}, {2, -3, 5, 0});
  CHECK(values<int64_t>(run1(op("Pow"), {xi, i64({4}, {10, 3, 0, 0})})) == std::vector<int64_t>{1024, -27, 1, 1});
  CHECK(values<int64_t>(run1(op("Pow"), {xi, f32({4}, {2, 2, 0.5f, 1})})) == std::vector<int64_t>{4, 9, 2, 0});
  CHECK(values<int32_t>(run1(op("Pow"), {i32({3}, {2, 1, -1}), i32({3}, {-1, -5, -3})})) ==
        std::vector<int32_t>{0, 1, -1});
  auto d = values<double>(run1(op("Pow"), {f64({2}, {2.0, 9.0}), f32({2}, {0.5f, 0.5f})}));
  CHECK(d[0] == Approx(1.4142135623730951).epsilon(1e-15));
  CHECK(d[1] == 3.0);
  CHECK(run_error(op("Pow"), {b8({1}, {true}), f32({1}, {1})}).find("base type bool") != std::string::npos);
}

TEST_CASE("PRelu broadcasts the slope", "[elementwise]") {
  tensor x = f32({2, 3}, {-1, 2, -3, 4, -5, 6});
  check_close(values<float>(run1(op("PRelu"), {x, f32({3}, {0.1f, 0.2f, 0.3f})})), {-0.1f, 2, -0.9f, 4, -1.0f, 6});
  check_close(values<float>(run1(op("PRelu"), {x, f32({1}, {0.5f})})), {-0.5f, 2, -1.5f, 4, -2.5f, 6});
  CHECK(values<int32_t>(run1(op("PRelu"), {i32({2}, {-4, 4}), i32({1}, {2})})) == std::vector<int32_t>{-8, 4});
}

TEST_CASE("float16 binary ops compute in float", "[elementwise]") {
  tensor a = f16({3}, {1.0f, 2.5f, -3.0f});
  tensor b = f16({1}, {0.5f});
  tensor r = run1(op("Mul"), {a, b});
  REQUIRE(r.type() == dtype::f16);
  check_close(f16_values(r), {0.5f, 1.25f, -1.5f});
  CHECK(bools(run1(op("Less"), {a, b})) == std::vector<bool>{false, false, true});
  tensor bf = tensor::from_vector<bfloat16>({2}, {bfloat16(1.0f), bfloat16(3.0f)});
  tensor bs = run1(op("Add"), {bf, bf});
  REQUIRE(bs.type() == dtype::bf16);
  CHECK(static_cast<float>(values<bfloat16>(bs)[1]) == 6.0f);
}

TEST_CASE("comparisons and logic ops give bool", "[elementwise]") {
  tensor a = f32({2, 2}, {1, 2, 3, nan_f});
  tensor b = f32({2}, {2, 2});
  CHECK(bools(run1(op("Equal"), {a, b})) == std::vector<bool>{false, true, false, false});
  CHECK(bools(run1(op("Less"), {a, b})) == std::vector<bool>{true, false, false, false});
  CHECK(bools(run1(op("Greater"), {a, b})) == std::vector<bool>{false, false, true, false});
  CHECK(bools(run1(op("LessOrEqual"), {a, b})) == std::vector<bool>{true, true, false, false});
  CHECK(bools(run1(op("GreaterOrEqual"), {a, b})) == std::vector<bool>{false, true, true, false});
  CHECK(bools(run1(op("Equal"), {i64({3}, {1, 2, 3}), i64({}, {2})})) == std::vector<bool>{false, true, false});
  tensor p = b8({4}, {true, true, false, false});
  tensor q = b8({4}, {true, false, true, false});
  CHECK(bools(run1(op("And"), {p, q})) == std::vector<bool>{true, false, false, false});
  CHECK(bools(run1(op("Or"), {p, q})) == std::vector<bool>{true, true, true, false});
  CHECK(bools(run1(op("Xor"), {p, q})) == std::vector<bool>{false, true, true, false});
  CHECK(bools(run1(op("Equal"), {p, q})) == std::vector<bool>{true, false, false, true});
  // Broadcast bool ops: [2,1] with [2].
  CHECK(bools(run1(op("And"), {b8({2, 1}, {true, false}), b8({2}, {true, false})})) ==
        std::vector<bool>{true, false, false, false});
  // Bool bytes other than 0/1 count as true.
  tensor odd = b8({1}, {true});
  static_cast<uint8_t*>(odd.raw())[0] = 2;
  CHECK(bools(run1(op("Equal"), {odd, b8({1}, {true})})) == std::vector<bool>{true});
}

TEST_CASE("bitwise ops and BitShift", "[elementwise]") {
  tensor a = i32({3}, {12, -1, 5});
  tensor b = i32({3}, {10, 7, 2});
  CHECK(values<int32_t>(run1(op("BitwiseAnd"), {a, b})) == std::vector<int32_t>{8, 7, 0});
  CHECK(values<int32_t>(run1(op("BitwiseOr"), {a, b})) == std::vector<int32_t>{14, -1, 7});
  CHECK(values<int32_t>(run1(op("BitwiseXor"), {a, b})) == std::vector<int32_t>{6, -8, 7});
  tensor u = tensor::from_vector<uint8_t>({4}, {16, 4, 1, 255});
  tensor s = tensor::from_vector<uint8_t>({4}, {1, 2, 7, 8});
  CHECK(values<uint8_t>(run1(op_attr_s("BitShift", "direction", "RIGHT"), {u, s})) ==
        std::vector<uint8_t>{8, 1, 0, 0});
  CHECK(values<uint8_t>(run1(op_attr_s("BitShift", "direction", "LEFT"), {u, s})) ==
        std::vector<uint8_t>{32, 16, 128, 0});
  tensor u64 = tensor::from_vector<uint64_t>({2}, {1, 3});
  tensor s64 = tensor::from_vector<uint64_t>({1}, {63});
  CHECK(values<uint64_t>(run1(op_attr_s("BitShift", "direction", "LEFT"), {u64, s64})) ==
        std::vector<uint64_t>{uint64_t{1} << 63, uint64_t{1} << 63});
}

TEST_CASE("Sum, Mean, Max, Min take 1..N broadcast inputs", "[elementwise]") {
  tensor a = f32({3}, {3, 2, 1});
  tensor b = f32({3}, {1, 4, 4});
  tensor c = f32({2, 1}, {2, 10});
  check_close(values<float>(run1(op("Sum"), {a})), {3, 2, 1});
  check_close(values<float>(run1(op("Sum"), {a, b})), {4, 6, 5});
  tensor s3 = run1(op("Sum"), {a, b, c});
  CHECK(s3.shape() == shape_t{2, 3});
  check_close(values<float>(s3), {6, 8, 7, 14, 16, 15});
  check_close(values<float>(run1(op("Mean"), {a, b, f32({1}, {2})})), {2, 8.0f / 3, 7.0f / 3});
  check_close(values<float>(run1(op("Max"), {a, b, c})), {3, 4, 4, 10, 10, 10});
  check_close(values<float>(run1(op("Min"), {a, b, c})), {1, 2, 1, 1, 2, 1});
  // Broadcasting where the first two inputs alone are smaller than the output.
  tensor s = run1(op("Sum"), {f32({3}, {1, 2, 3}), f32({1}, {1}), f32({2, 1}, {10, 20})});
  check_close(values<float>(s), {12, 13, 14, 22, 23, 24});
  // NaN propagates through Max/Min.
  check_close(values<float>(run1(op("Max"), {f32({2}, {nan_f, 1}), f32({2}, {1, nan_f})})), {nan_f, nan_f});
  check_close(values<float>(run1(op("Min"), {f32({2}, {nan_f, 1}), f32({2}, {1, nan_f})})), {nan_f, nan_f});
  CHECK(values<int32_t>(run1(op("Max"), {i32({3}, {1, 5, -2}), i32({3}, {3, 0, -7})})) == std::vector<int32_t>{3, 5, -2});
  CHECK(values<uint8_t>(run1(op("Min"), {tensor::from_vector<uint8_t>({2}, {1, 200}), tensor::from_vector<uint8_t>({1}, {100})})) ==
        std::vector<uint8_t>{1, 100});
  check_close(f16_values(run1(op("Mean"), {f16({2}, {1, 2}), f16({2}, {2, 3})})), {1.5f, 2.5f});
  CHECK(run_error(op("Sum"), {}).find("at least 1 input") != std::string::npos);
}

TEST_CASE("Where broadcasts three ways over any dtype", "[elementwise]") {
  tensor c = b8({2, 2}, {true, false, true, true});
  tensor x = f32({2, 2}, {1, 2, 3, 4});
  tensor y = f32({2, 2}, {9, 8, 7, 6});
  check_close(values<float>(run1(op("Where"), {c, x, y})), {1, 8, 3, 4});
  // Masked fill: [2,1] condition, scalar X, [2,3] Y.
  tensor r = run1(op("Where"), {b8({2, 1}, {true, false}), f32({}, {-inf}), f32({2, 3}, {1, 2, 3, 4, 5, 6})});
  CHECK(r.shape() == shape_t{2, 3});
  check_close(values<float>(r), {-inf, -inf, -inf, 4, 5, 6});
  // Condition broadcast along the last axis.
  tensor r2 = run1(op("Where"), {b8({3}, {true, false, true}), i64({2, 3}, {1, 2, 3, 4, 5, 6}), i64({1}, {0})});
  CHECK(values<int64_t>(r2) == std::vector<int64_t>{1, 0, 3, 4, 0, 6});
  tensor r3 = run1(op("Where"), {b8({2}, {false, true}), b8({2}, {true, true}), b8({2}, {false, false})});
  CHECK(bools(r3) == std::vector<bool>{false, true});
  tensor h = run1(op("Where"), {b8({2}, {false, true}), f16({2}, {1, 2}), f16({2}, {3, 4})});
  check_close(f16_values(h), {3, 2});
  tensor i8 = run1(op("Where"), {b8({2}, {false, true}), tensor::from_vector<int8_t>({2}, {1, 2}),
                                 tensor::from_vector<int8_t>({2}, {-3, -4})});
  CHECK(values<int8_t>(i8) == std::vector<int8_t>{-3, 2});
}

TEST_CASE("Clip with optional scalar bounds", "[elementwise]") {
  tensor x = f32({5}, {-2, -1, 0, 1, nan_f});
  check_close(values<float>(run1(op("Clip"), {x, f32({}, {-1}), f32({}, {0.5f})})), {-1, -1, 0, 0.5f, nan_f});
  check_close(values<float>(run1(op("Clip"), {x, f32({}, {-1.5f})})), {-1.5f, -1, 0, 1, nan_f});
  check_close(values<float>(run1(op("Clip"), {x, tensor(), f32({1}, {0})})), {-2, -1, 0, 0, nan_f});
  check_close(values<float>(run1(op("Clip"), {x})), {-2, -1, 0, 1, nan_f});
  // min > max: everything becomes max.
  check_close(values<float>(run1(op("Clip"), {x, f32({}, {2}), f32({}, {1})})), {1, 1, 1, 1, nan_f});
  tensor i8 = tensor::from_vector<int8_t>({4}, {-128, -5, 5, 127});
  CHECK(values<int8_t>(run1(op("Clip"), {i8, tensor::from_vector<int8_t>({}, {-10}),
                                         tensor::from_vector<int8_t>({}, {10})})) ==
        std::vector<int8_t>{-10, -5, 5, 10});
  CHECK(values<int8_t>(run1(op("Clip"), {i8, tensor(), tensor::from_vector<int8_t>({}, {0})})) ==
        std::vector<int8_t>{-128, -5, 0, 0});
  // Old-style bounds as float constants on an int tensor saturate instead of wrapping.
  CHECK(values<int8_t>(run1(op("Clip"), {i8, f32({}, {-3.4e38f}), f32({}, {3.4e38f})})) ==
        std::vector<int8_t>{-128, -5, 5, 127});
  check_close(f16_values(run1(op("Clip"), {f16({3}, {-3, 0.25f, 7}), f16({}, {-1}), f16({}, {1})})), {-1, 0.25f, 1});
}

TEST_CASE("Cast converts between all supported dtypes", "[elementwise]") {
  auto cast = [](const tensor& t, dtype to) { return run1(op_attr_i("Cast", "to", static_cast<int64_t>(to)), {t}); };
  tensor x = f32({6}, {-2.7f, -0.5f, 0.0f, 1.9f, 300.0f, nan_f});
  const int32_t imin = std::numeric_limits<int32_t>::min();
  const int64_t lmin = std::numeric_limits<int64_t>::min();
  CHECK(values<int32_t>(cast(x, dtype::i32)) == std::vector<int32_t>{-2, 0, 0, 1, 300, imin});
  CHECK(values<int64_t>(cast(x, dtype::i64)) == std::vector<int64_t>{-2, 0, 0, 1, 300, lmin});
  CHECK(values<int8_t>(cast(x, dtype::i8)) == std::vector<int8_t>{-2, 0, 0, 1, 44, 0});
  CHECK(values<uint8_t>(cast(x, dtype::u8)) == std::vector<uint8_t>{254, 0, 0, 1, 44, 0});
  CHECK(bools(cast(x, dtype::boolean)) == std::vector<bool>{true, true, false, true, true, true});
  auto d = values<double>(cast(x, dtype::f64));
  CHECK(d[0] == static_cast<double>(-2.7f));
  CHECK(std::isnan(d[5]));
  // Out of range: what x86 (and so NumPy / onnxruntime) give, not UB.
  CHECK(values<int64_t>(cast(f32({2}, {1e30f, -inf}), dtype::i64)) == std::vector<int64_t>{lmin, lmin});
  CHECK(values<uint64_t>(cast(f32({2}, {1e19f, -1.0f}), dtype::u64)) ==
        std::vector<uint64_t>{static_cast<uint64_t>(1e19f), std::numeric_limits<uint64_t>::max()});
  CHECK(values<uint32_t>(cast(f64({2}, {4294967295.0, -1.0}), dtype::u32)) ==
        std::vector<uint32_t>{4294967295u, 4294967295u});
  // Integers.
  tensor i = i64({4}, {-1, 256, 65537, 3});
  CHECK(values<uint8_t>(cast(i, dtype::u8)) == std::vector<uint8_t>{255, 0, 1, 3});
  CHECK(values<int16_t>(cast(i, dtype::i16)) == std::vector<int16_t>{-1, 256, 1, 3});
  check_close(values<float>(cast(i, dtype::f32)), {-1, 256, 65537, 3});
  CHECK(bools(cast(i, dtype::boolean)) == std::vector<bool>{true, true, true, true});
  // Bool.
  tensor b = b8({3}, {true, false, true});
  check_close(values<float>(cast(b, dtype::f32)), {1, 0, 1});
  CHECK(values<int64_t>(cast(b, dtype::i64)) == std::vector<int64_t>{1, 0, 1});
  check_close(f16_values(cast(b, dtype::f16)), {1, 0, 1});
  // Halves.
  tensor h = cast(f32({4}, {1.0f, 0.1f, 65520.0f, -2.0f}), dtype::f16);
  REQUIRE(h.type() == dtype::f16);
  CHECK(values<half>(h)[0].bits == 0x3c00);
  CHECK(values<half>(h)[1].bits == 0x2e66);
  CHECK(values<half>(h)[2].bits == 0x7c00);  // rounds to inf
  check_close(values<float>(cast(h, dtype::f32)), {1.0f, 0.0999755859375f, inf, -2.0f});
  CHECK(values<int32_t>(cast(h, dtype::i32)) == std::vector<int32_t>{1, 0, imin, -2});
  // double -> half rounds once: 1 + 2^-11 + 2^-40 is just above the tie, so it rounds up (a
  // double -> float -> half chain would round to the tie and then to even, i.e. down).
  tensor dd = f64({1}, {1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)});
  CHECK(values<half>(cast(dd, dtype::f16))[0].bits == 0x3c01);
  tensor bf = cast(f32({2}, {1.0f, 3.14159f}), dtype::bf16);
  CHECK(values<bfloat16>(bf)[0].bits == 0x3f80);
  CHECK(values<bfloat16>(bf)[1].bits == 0x4049);
  check_close(values<float>(cast(bf, dtype::f32)), {1.0f, 3.140625f});
  // Same type: a copy.
  check_close(values<float>(cast(x, dtype::f32)), {-2.7f, -0.5f, 0.0f, 1.9f, 300.0f, nan_f});
  // CastLike takes the type from its second input.
  tensor cl = run1(op("CastLike"), {f32({2}, {1.5f, -1.5f}), i32({}, {0})});
  CHECK(values<int32_t>(cl) == std::vector<int32_t>{1, -1});
  // Errors.
  CHECK(run_error(op_attr_i("Cast", "to", 8), {x}).find("string") != std::string::npos);
  CHECK(!run_error(op("Cast"), {x}).empty());
  CHECK(!run_error(op_attr_i("Cast", "to", 999), {x}).empty());
}

TEST_CASE("large tensors take the parallel paths and give the same results", "[elementwise]") {
  thread_pool pool(4);
  const int64_t n = 7 * 17149;
  std::vector<float> xv(static_cast<size_t>(n)), bias(7);
  for (int64_t i = 0; i < n; ++i) xv[static_cast<size_t>(i)] = static_cast<float>((i * 37) % 101) / 10.0f - 5.0f;
  for (int i = 0; i < 7; ++i) bias[static_cast<size_t>(i)] = static_cast<float>(i);
  tensor x = f32({n}, xv);
  tensor y = run1(op("Tanh"), {x}, &pool);
  auto yv = values<float>(y);
  for (int64_t i = 0; i < n; i += 997)
    CHECK(yv[static_cast<size_t>(i)] == Approx(std::tanh(xv[static_cast<size_t>(i)])).epsilon(1e-6).margin(1e-7));
  // Bias add along the last dim, [n/7, 7] + [7], in parallel.
  tensor x2 = x.reshaped({n / 7, 7});
  tensor s = run1(op("Add"), {x2, f32({7}, bias)}, &pool);
  auto sv = values<float>(s);
  for (int64_t i = 0; i < n; i += 113)
    CHECK(sv[static_cast<size_t>(i)] == xv[static_cast<size_t>(i)] + bias[static_cast<size_t>(i % 7)]);
  // Per-row broadcast [n/7, 1] with a start in the middle of rows.
  std::vector<float> rows(static_cast<size_t>(n / 7));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i);
  tensor m = run1(op("Mul"), {x2, f32({n / 7, 1}, rows)}, &pool);
  auto mv = values<float>(m);
  for (int64_t i = 0; i < n; i += 101)
    CHECK(mv[static_cast<size_t>(i)] == xv[static_cast<size_t>(i)] * rows[static_cast<size_t>(i / 7)]);
  // Where with a broadcast condition.
  std::vector<bool> cond(7);
  for (int i = 0; i < 7; ++i) cond[static_cast<size_t>(i)] = i % 2 == 0;
  tensor w = run1(op("Where"), {b8({7}, cond), x2, f32({}, {0})}, &pool);
  auto wv = values<float>(w);
  for (int64_t i = 0; i < n; i += 89)
    CHECK(wv[static_cast<size_t>(i)] == ((i % 7) % 2 == 0 ? xv[static_cast<size_t>(i)] : 0.0f));
  // Cast both ways through float16.
  tensor h = run1(op_attr_i("Cast", "to", static_cast<int64_t>(dtype::f16)), {x}, &pool);
  tensor back = run1(op_attr_i("Cast", "to", static_cast<int64_t>(dtype::f32)), {h}, &pool);
  auto bv = values<float>(back);
  for (int64_t i = 0; i < n; i += 331)
    CHECK(bv[static_cast<size_t>(i)] == static_cast<float>(half(xv[static_cast<size_t>(i)])));
}

TEST_CASE("random broadcasts match a naive reference", "[elementwise]") {
  // Naive NumPy broadcasting: the input offset of output index `flat`.
  auto offset = [](const shape_t& in, const shape_t& out, int64_t flat) {
    int64_t off = 0, stride = 1;
    for (size_t d = out.size(); d-- > 0;) {
      int64_t i = flat % out[d];
      flat /= out[d];
      size_t lead = out.size() - in.size();
      if (d >= lead) {
        int64_t dim = in[d - lead];
        if (dim != 1) off += i * stride;
        stride *= dim;
      }
    }
    return off;
  };
  uint32_t seed = 12345;
  auto rnd = [&](uint32_t n) {
    seed = seed * 1664525u + 1013904223u;
    return (seed >> 8) % n;
  };
  thread_pool pool(3);
  for (int iter = 0; iter < 300; ++iter) {
    const size_t rank = rnd(5);
    shape_t out(rank);
    for (auto& d : out) d = 1 + rnd(4);
    // Three shapes derived from out: dims dropped from the front or set to 1.
    shape_t s[3];
    for (auto& sh : s) {
      size_t r = rank - rnd(static_cast<uint32_t>(rank + 1));
      sh.assign(out.end() - static_cast<int64_t>(r), out.end());
      for (auto& d : sh)
        if (rnd(3) == 0) d = 1;
    }
    std::vector<float> va, vb;
    std::vector<bool> vc;
    for (int64_t i = 0; i < num_elements(s[0]); ++i) va.push_back(static_cast<float>(rnd(100)));
    for (int64_t i = 0; i < num_elements(s[1]); ++i) vb.push_back(static_cast<float>(rnd(100)) + 1000.0f);
    for (int64_t i = 0; i < num_elements(s[2]); ++i) vc.push_back(rnd(2) == 0);
    tensor a = f32(s[0], va), b = f32(s[1], vb), c = b8(s[2], vc);
    shape_t ab;
    REQUIRE(cpu::broadcast_shapes(s[0], s[1], &ab));
    tensor sum = run1(op("Sub"), {a, b}, iter % 2 ? &pool : nullptr);
    REQUIRE(sum.shape() == ab);
    auto sv = values<float>(sum);
    for (int64_t i = 0; i < num_elements(ab); ++i)
      REQUIRE(sv[static_cast<size_t>(i)] == va[static_cast<size_t>(offset(s[0], ab, i))] -
                                                vb[static_cast<size_t>(offset(s[1], ab, i))]);
    shape_t all;
    REQUIRE(cpu::broadcast_shapes(ab, s[2], &all));
    tensor w = run1(op("Where"), {c, a, b}, iter % 2 ? &pool : nullptr);
    REQUIRE(w.shape() == all);
    auto wv = values<float>(w);
    for (int64_t i = 0; i < num_elements(all); ++i) {
      float want = vc[static_cast<size_t>(offset(s[2], all, i))] ? va[static_cast<size_t>(offset(s[0], all, i))]
                                                                   : vb[static_cast<size_t>(offset(s[1], all, i))];
      REQUIRE(wv[static_cast<size_t>(i)] == want);
    }
    tensor m = run1(op("Max"), {a, b, f32(s[2], std::vector<float>(vc.size(), 500.0f))});
    REQUIRE(m.shape() == all);
    auto mv = values<float>(m);
    for (int64_t i = 0; i < num_elements(all); ++i)
      REQUIRE(mv[static_cast<size_t>(i)] == vb[static_cast<size_t>(offset(s[1], all, i))]);
  }
}
