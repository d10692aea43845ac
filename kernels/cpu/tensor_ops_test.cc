#include <catch2/catch.hpp>

#include <cstring>
#include <limits>
#include <numeric>

#include "engine/op_runner.h"
#include "engine/thread_pool.h"
#include "kernels/cpu/cpu_ops.h"

using namespace gpugrid;

namespace {

node op(const std::string& type, size_t outputs = 1, int opset = 18) { return make_node(type, outputs, opset); }

void set_i(node& n, const std::string& key, int64_t v) {
  attribute a;
  a.type = attribute::kind::integer;
  a.i = v;
  n.attrs[key] = a;
}
void set_ints(node& n, const std::string& key, std::vector<int64_t> v) {
  attribute a;
  a.type = attribute::kind::ints;
  a.ints = std::move(v);
  n.attrs[key] = a;
}
void set_s(node& n, const std::string& key, const std::string& v) {
  attribute a;
  a.type = attribute::kind::string;
  a.s = v;
  n.attrs[key] = a;
}
void set_t(node& n, const std::string& key, tensor t) {
  attribute a;
  a.type = attribute::kind::tensor;
  a.t = std::move(t);
  n.attrs[key] = a;
}

std::vector<tensor> run(node n, const std::vector<tensor>& inputs, thread_pool* pool = nullptr) {
  auto r = run_single_op(cpu::registry(), std::move(n), inputs, pool);
  if (!r) FAIL(r.error().message());
  return *r;
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
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}
std::vector<float> fvals(const tensor& t) { return values<float>(t); }
std::vector<int64_t> ivals(const tensor& t) { return values<int64_t>(t); }

tensor f(shape_t s, std::vector<float> v) { return tensor::from_vector<float>(std::move(s), v); }
tensor i64(shape_t s, std::vector<int64_t> v) { return tensor::from_vector<int64_t>(std::move(s), v); }
tensor i32(shape_t s, std::vector<int32_t> v) { return tensor::from_vector<int32_t>(std::move(s), v); }
tensor ints(std::vector<int64_t> v) {
  int64_t n = static_cast<int64_t>(v.size());
  return tensor::from_vector<int64_t>({n}, v);
}
tensor iota_f(shape_t s) {
  tensor t = tensor::zeros(dtype::f32, std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Views

TEST_CASE("Reshape: 0 copies, -1 infers, allowzero, errors", "[tensor_ops]") {
  tensor x = iota_f({2, 3, 4});
  tensor y = run1(op("Reshape"), {x, ints({0, -1})});
  CHECK(y.shape() == shape_t{2, 12});
  CHECK(y.raw() == x.raw());  // a view
  CHECK(run1(op("Reshape"), {x, ints({4, 0, 2})}).shape() == shape_t{4, 3, 2});
  CHECK(run1(op("Reshape"), {x, ints({-1})}).shape() == shape_t{24});
  CHECK(run1(op("Reshape"), {x, tensor::from_vector<int32_t>({2}, {6, -1})}).shape() == shape_t{6, 4});

  node az = op("Reshape");
  set_i(az, "allowzero", 1);
  tensor empty = tensor::zeros(dtype::f32, {0, 3});
  CHECK(run1(az, {empty, ints({3, 0})}).shape() == shape_t{3, 0});
  CHECK_FALSE(run_error(az, {x, ints({0, -1})}).empty());

  CHECK(run_error(op("Reshape"), {x, ints({5, -1})}).find("cannot reshape") != std::string::npos);
  CHECK_FALSE(run_error(op("Reshape"), {x, ints({-1, -1})}).empty());
  CHECK_FALSE(run_error(op("Reshape"), {x, ints({2, -2, 12})}).empty());
  CHECK_FALSE(run_error(op("Reshape"), {x, ints({0, 0, 0, 0})}).empty());  // copies a dim x lacks
  CHECK_FALSE(run_error(op("Reshape"), {x, ints({int64_t{1} << 40, int64_t{1} << 40})}).empty());
  CHECK_FALSE(run_error(op("Reshape"), {x, f({1}, {24})}).empty());  // float shape
}

TEST_CASE("Flatten, Squeeze, Unsqueeze, Identity", "[tensor_ops]") {
  tensor x = iota_f({2, 1, 3, 1});
  node fl = op("Flatten");
  set_i(fl, "axis", 2);
  CHECK(run1(fl, {x}).shape() == shape_t{2, 3});
  set_i(fl, "axis", 0);
  CHECK(run1(fl, {x}).shape() == shape_t{1, 6});
  set_i(fl, "axis", -1);
  CHECK(run1(fl, {x}).shape() == shape_t{6, 1});
  set_i(fl, "axis", 4);
  CHECK(run1(fl, {x}).shape() == shape_t{6, 1});
  set_i(fl, "axis", 5);
  CHECK_FALSE(run_error(fl, {x}).empty());

  CHECK(run1(op("Squeeze"), {x}).shape() == shape_t{2, 3});
  CHECK(run1(op("Squeeze"), {x, ints({-1})}).shape() == shape_t{2, 1, 3});
  CHECK(run_error(op("Squeeze"), {x, ints({0})}).find("not 1") != std::string::npos);
  CHECK_FALSE(run_error(op("Squeeze"), {x, ints({1, 1})}).empty());
  CHECK_FALSE(run_error(op("Squeeze"), {x, ints({4})}).empty());

  tensor v = iota_f({3, 4});
  CHECK(run1(op("Unsqueeze"), {v, ints({0, 3})}).shape() == shape_t{1, 3, 4, 1});
  CHECK(run1(op("Unsqueeze"), {v, ints({-1, 1})}).shape() == shape_t{3, 1, 4, 1});
  CHECK(run1(op("Unsqueeze"), {tensor::scalar<float>(2), ints({0})}).shape() == shape_t{1});
  CHECK_FALSE(run_error(op("Unsqueeze"), {v, ints({0, 0})}).empty());
  CHECK_FALSE(run_error(op("Unsqueeze"), {v, ints({4})}).empty());
  CHECK_FALSE(run_error(op("Unsqueeze"), {v}).empty());  // axes are required

  tensor id = run1(op("Identity"), {v});
  CHECK(id.raw() == v.raw());
  CHECK(id.shape() == v.shape());
}

TEST_CASE("Dropout in inference is a view with an all-true mask", "[tensor_ops]") {
  tensor x = f({2, 2}, {1, 2, 3, 4});
  auto outs = run(op("Dropout", 2, 13), {x, tensor::scalar<float>(0.3f)});
  CHECK(outs[0].raw() == x.raw());
  CHECK(outs[1].type() == dtype::boolean);
  CHECK(values<bool>(outs[1]) == std::vector<bool>{true, true, true, true});
  // training_mode with ratio 0 is still deterministic.
  auto t0 = run(op("Dropout", 2, 13), {x, tensor::scalar<float>(0.0f), tensor::scalar<bool>(true)});
  CHECK(fvals(t0[0]) == std::vector<float>{1, 2, 3, 4});
  CHECK(run_error(op("Dropout", 1, 13), {x, tensor::scalar<float>(0.5f), tensor::scalar<bool>(true)})
            .find("not supported") != std::string::npos);
  // Opset 7: the mask has the input's type.
  auto old = run(op("Dropout", 2, 7), {x});
  CHECK(fvals(old[1]) == std::vector<float>{1, 1, 1, 1});
}

TEST_CASE("Shape, Size", "[tensor_ops]") {
  tensor x = iota_f({2, 3, 4, 5});
  CHECK(ivals(run1(op("Shape"), {x})) == std::vector<int64_t>{2, 3, 4, 5});
  node s = op("Shape");
  set_i(s, "start", 1);
  set_i(s, "end", -1);
  CHECK(ivals(run1(s, {x})) == std::vector<int64_t>{3, 4});
  set_i(s, "start", -10);
  set_i(s, "end", 10);
  CHECK(ivals(run1(s, {x})) == std::vector<int64_t>{2, 3, 4, 5});
  set_i(s, "start", 3);
  set_i(s, "end", 1);
  CHECK(run1(s, {x}).shape() == shape_t{0});
  tensor sz = run1(op("Size"), {x});
  CHECK(sz.shape().empty());
  CHECK(ivals(sz) == std::vector<int64_t>{120});
}

TEST_CASE("Constant and ConstantOfShape", "[tensor_ops]") {
  node c = op("Constant");
  set_t(c, "value", f({2}, {1.5f, -2}));
  CHECK(fvals(run1(c, {})) == std::vector<float>{1.5f, -2});
  node ci = op("Constant");
  set_ints(ci, "value_ints", {3, 4});
  CHECK(ivals(run1(ci, {})) == std::vector<int64_t>{3, 4});
  node cf = op("Constant");
  attribute fa;
  fa.type = attribute::kind::floating;
  fa.f = 0.25f;
  cf.attrs["value_float"] = fa;
  tensor t = run1(cf, {});
  CHECK(t.shape().empty());
  CHECK(fvals(t) == std::vector<float>{0.25f});
  node cs = op("Constant");
  set_s(cs, "value_string", "hi");
  CHECK(run_error(cs, {}).find("string") != std::string::npos);
  CHECK_FALSE(run_error(op("Constant"), {}).empty());

  node cos = op("ConstantOfShape");
  set_t(cos, "value", tensor::from_vector<int32_t>({1}, {7}));
  tensor y = run1(cos, {ints({2, 3})});
  CHECK(y.shape() == shape_t{2, 3});
  CHECK(values<int32_t>(y) == std::vector<int32_t>(6, 7));
  tensor z = run1(op("ConstantOfShape"), {ints({2, 0})});
  CHECK(z.type() == dtype::f32);
  CHECK(z.numel() == 0);
  tensor sc = run1(cos, {tensor::zeros(dtype::i64, {0})});
  CHECK(sc.shape().empty());
  CHECK(values<int32_t>(sc) == std::vector<int32_t>{7});
  CHECK_FALSE(run_error(cos, {ints({-1, 3})}).empty());
  CHECK_FALSE(run_error(cos, {ints({int64_t{1} << 31, int64_t{1} << 31})}).empty());
}

TEST_CASE("Range", "[tensor_ops]") {
  CHECK(fvals(run1(op("Range"), {tensor::scalar<float>(1), tensor::scalar<float>(5), tensor::scalar<float>(2)})) ==
        std::vector<float>{1, 3});
  CHECK(values<int32_t>(run1(op("Range"), {tensor::scalar<int32_t>(10), tensor::scalar<int32_t>(6),
                                           tensor::scalar<int32_t>(-3)})) == std::vector<int32_t>{10, 7});
  CHECK(ivals(run1(op("Range"), {tensor::scalar<int64_t>(0), tensor::scalar<int64_t>(4), tensor::scalar<int64_t>(1)})) ==
        std::vector<int64_t>{0, 1, 2, 3});
  CHECK(run1(op("Range"), {tensor::scalar<int64_t>(5), tensor::scalar<int64_t>(0), tensor::scalar<int64_t>(1)})
            .shape() == shape_t{0});
  CHECK_FALSE(run_error(op("Range"), {tensor::scalar<int64_t>(0), tensor::scalar<int64_t>(4),
                                      tensor::scalar<int64_t>(0)}).empty());
  CHECK_FALSE(run_error(op("Range"), {tensor::scalar<int64_t>(std::numeric_limits<int64_t>::min()),
                                      tensor::scalar<int64_t>(std::numeric_limits<int64_t>::max()),
                                      tensor::scalar<int64_t>(1)}).empty());
  CHECK_FALSE(run_error(op("Range"), {tensor::scalar<float>(0), tensor::scalar<int64_t>(4),
                                      tensor::scalar<int64_t>(1)}).empty());
}

TEST_CASE("EyeLike", "[tensor_ops]") {
  node e = op("EyeLike");
  set_i(e, "k", 1);
  tensor y = run1(e, {tensor::zeros(dtype::i32, {3, 4})});
  CHECK(values<int32_t>(y) == std::vector<int32_t>{0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1});
  node e2 = op("EyeLike");
  set_i(e2, "k", -2);
  set_i(e2, "dtype", 1);
  tensor y2 = run1(e2, {tensor::zeros(dtype::i64, {3, 2})});
  CHECK(fvals(y2) == std::vector<float>{0, 0, 0, 0, 1, 0});
  set_i(e2, "k", std::numeric_limits<int64_t>::max());
  CHECK(fvals(run1(e2, {tensor::zeros(dtype::i64, {2, 2})})) == std::vector<float>{0, 0, 0, 0});
}

// ---------------------------------------------------------------------------------------------
// Copies

// Reference transpose by index arithmetic.
static std::vector<float> naive_transpose(const tensor& x, const std::vector<int64_t>& perm) {
  const size_t r = x.rank();
  shape_t os(r);
  for (size_t i = 0; i < r; ++i) os[i] = x.dim(static_cast<size_t>(perm[i]));
  std::vector<int64_t> is(r, 1);
  for (size_t d = r; d-- > 1;) is[d - 1] = is[d] * x.dim(d);
  std::vector<float> out(static_cast<size_t>(x.numel()));
  std::vector<int64_t> idx(r, 0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < r; ++d) off += idx[d] * is[static_cast<size_t>(perm[d])];
    out[static_cast<size_t>(i)] = x.data<float>()[off];
    for (size_t d = r; d-- > 0;) {
      if (++idx[d] < os[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

TEST_CASE("Transpose: default, 2-D, permutations, big parallel", "[tensor_ops]") {
  tensor x = f({2, 3}, {1, 2, 3, 4, 5, 6});
  tensor y = run1(op("Transpose"), {x});
  CHECK(y.shape() == shape_t{3, 2});
  CHECK(fvals(y) == std::vector<float>{1, 4, 2, 5, 3, 6});

  tensor x3 = iota_f({2, 3, 4});
  std::vector<std::vector<int64_t>> perms = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (auto& p : perms) {
    node n = op("Transpose");
    set_ints(n, "perm", p);
    tensor t = run1(n, {x3});
    CHECK(fvals(t) == naive_transpose(x3, p));
  }
  // Hand-checked: [2,3,4] perm (1,2,0): out[j][k][i] = x[i][j][k] = 12i + 4j + k.
  node n120 = op("Transpose");
  set_ints(n120, "perm", {1, 2, 0});
  tensor t120 = run1(n120, {x3});
  CHECK(t120.shape() == shape_t{3, 4, 2});
  CHECK(fvals(t120)[0] == 0);
  CHECK(fvals(t120)[1] == 12);
  CHECK(fvals(t120)[2] == 1);
  CHECK(fvals(t120)[23] == 23);

  // Size-1 dims and merged runs; int8 and int64 element sizes; parallel on a real pool.
  thread_pool pool(4);
  tensor big = iota_f({3, 1, 67, 5, 129});
  for (auto p : std::vector<std::vector<int64_t>>{{4, 3, 2, 1, 0}, {0, 2, 1, 4, 3}, {2, 3, 0, 1, 4}, {1, 0, 3, 4, 2}}) {
    node n = op("Transpose");
    set_ints(n, "perm", p);
    CHECK(fvals(run1(n, {big}, &pool)) == naive_transpose(big, p));
  }
  for (shape_t s2 : {shape_t{37, 45}, shape_t{64, 48}, shape_t{8, 8}, shape_t{2, 40, 33}}) {
    tensor m = iota_f(s2);
    std::vector<int64_t> p2(s2.size());
    std::iota(p2.rbegin(), p2.rend(), int64_t{0});
    node n = op("Transpose");
    CHECK(fvals(run1(n, {m}, &pool)) == naive_transpose(m, p2));
  }
  tensor b8 = tensor::zeros(dtype::i8, {3, 70});
  for (int i = 0; i < 210; ++i) b8.data<int8_t>()[i] = static_cast<int8_t>(i);
  tensor t8 = run1(op("Transpose"), {b8});
  CHECK(t8.data<int8_t>()[1] == 70);
  CHECK(t8.data<int8_t>()[3] == 1);
  tensor b64 = i64({2, 2}, {1, 2, 3, 4});
  CHECK(ivals(run1(op("Transpose"), {b64})) == std::vector<int64_t>{1, 3, 2, 4});

  node bad = op("Transpose");
  set_ints(bad, "perm", {0, 0, 1});
  CHECK_FALSE(run_error(bad, {x3}).empty());
  set_ints(bad, "perm", {0, 1});
  CHECK_FALSE(run_error(bad, {x3}).empty());
  set_ints(bad, "perm", {0, 1, 3});
  CHECK_FALSE(run_error(bad, {x3}).empty());
  tensor s = tensor::zeros(dtype::string, {2});
  CHECK(run_error(op("Transpose"), {s}).find("unsupported type") != std::string::npos);
}

TEST_CASE("Concat", "[tensor_ops]") {
  tensor a = f({2, 2}, {1, 2, 3, 4}), b = f({2, 1}, {5, 6});
  node n = op("Concat");
  set_i(n, "axis", -1);
  tensor y = run1(n, {a, b});
  CHECK(y.shape() == shape_t{2, 3});
  CHECK(fvals(y) == std::vector<float>{1, 2, 5, 3, 4, 6});
  set_i(n, "axis", 0);
  tensor z = run1(n, {a, f({1, 2}, {7, 8}), tensor::zeros(dtype::f32, {0, 2})});
  CHECK(fvals(z) == std::vector<float>{1, 2, 3, 4, 7, 8});
  CHECK_FALSE(run_error(n, {a, b}).empty());          // mismatched off-axis dim
  CHECK_FALSE(run_error(n, {a, i64({1, 2}, {1, 2})}).empty());  // mismatched type
  set_i(n, "axis", 2);
  CHECK_FALSE(run_error(n, {a, a}).empty());
  // Large, parallel.
  thread_pool pool(3);
  tensor big1 = iota_f({4, 300, 100}), big2 = iota_f({4, 200, 100});
  node nb = op("Concat");
  set_i(nb, "axis", 1);
  tensor yb = run1(nb, {big1, big2}, &pool);
  CHECK(yb.shape() == shape_t{4, 500, 100});
  CHECK(yb.data<float>()[0] == 0);
  CHECK(yb.data<float>()[300 * 100] == 0);           // first of big2, batch 0
  CHECK(yb.data<float>()[500 * 100 + 5] == 30005);   // batch 1 of big1
  CHECK(yb.data<float>()[500 * 100 + 300 * 100 + 7] == 20007);
  // Every element, over the threads in pieces: three inputs of uneven sizes, one and three
  // outer rows.
  for (int64_t outer : {1, 3}) {
    tensor p = iota_f({outer, 70, 1001}), q = iota_f({outer, 1, 1001}), r = iota_f({outer, 131, 1001});
    tensor y3 = run1(nb, {p, q, r}, &pool);
    REQUIRE(y3.shape() == shape_t{outer, 202, 1001});
    int64_t bad = 0;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < 202; ++c)
        for (int64_t j = 0; j < 1001; ++j) {
          const tensor& src = c < 70 ? p : c < 71 ? q : r;
          const int64_t cc = c < 70 ? c : c < 71 ? c - 70 : c - 71, cn = src.dim(1);
          if (y3.data<float>()[(o * 202 + c) * 1001 + j] != src.data<float>()[(o * cn + cc) * 1001 + j]) ++bad;
        }
    CHECK(bad == 0);
  }
}

TEST_CASE("Split: split input, equal, num_outputs uneven", "[tensor_ops]") {
  tensor x = f({2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  node n = op("Split", 2);
  set_i(n, "axis", 1);
  auto o = run(n, {x, ints({2, 3})});
  CHECK(fvals(o[0]) == std::vector<float>{0, 1, 5, 6});
  CHECK(fvals(o[1]) == std::vector<float>{2, 3, 4, 7, 8, 9});
  CHECK_FALSE(run_error(n, {x, ints({2, 2})}).empty());
  CHECK_FALSE(run_error(n, {x, ints({6, -1})}).empty());
  CHECK_FALSE(run_error(n, {x}).empty());  // 5 is not divisible by 2

  node n3 = op("Split", 3, 18);
  set_i(n3, "axis", -1);
  set_i(n3, "num_outputs", 3);
  auto o3 = run(n3, {x});
  CHECK(o3[0].shape() == shape_t{2, 2});
  CHECK(o3[2].shape() == shape_t{2, 1});
  CHECK(fvals(o3[2]) == std::vector<float>{4, 9});

  node eq = op("Split", 2, 13);
  auto oe = run(eq, {x});
  CHECK(fvals(oe[1]) == std::vector<float>{5, 6, 7, 8, 9});
  auto oz = run(eq, {x, ints({0, 2})});
  CHECK(oz[0].shape() == shape_t{0, 5});
}

TEST_CASE("Slice: negative steps, clamping, axes", "[tensor_ops]") {
  tensor x = iota_f({3, 4});  // rows 0..3, 4..7, 8..11
  CHECK(fvals(run1(op("Slice"), {x, ints({1, 0}), ints({2, 3})})) == std::vector<float>{4, 5, 6});
  // axes and steps; INT64_MAX end clamps
  CHECK(fvals(run1(op("Slice"), {x, ints({1}), ints({std::numeric_limits<int64_t>::max()}), ints({-1}), ints({2})})) ==
        std::vector<float>{1, 3, 5, 7, 9, 11});
  // negative step: reverse rows
  tensor rev = run1(op("Slice"), {x, ints({-1}), ints({std::numeric_limits<int64_t>::min()}), ints({0}), ints({-1})});
  CHECK(fvals(rev) == std::vector<float>{8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3});
  tensor rev2 = run1(op("Slice"), {x, ints({3, 2}), ints({0, -5}), ints({1, 0}), ints({-2, -1})});
  CHECK(rev2.shape() == shape_t{3, 2});  // rows 2, 1, 0 (end -5 clamps to -1); cols 3, 1
  CHECK(fvals(rev2) == std::vector<float>{11, 9, 7, 5, 3, 1});
  // out of range start -> empty
  CHECK(run1(op("Slice"), {x, ints({10}), ints({20}), ints({1})}).shape() == shape_t{3, 0});
  // int32 index inputs
  CHECK(fvals(run1(op("Slice"), {x, i32({1}, {2}), i32({1}, {3})})) == std::vector<float>{8, 9, 10, 11});
  CHECK_FALSE(run_error(op("Slice"), {x, ints({0}), ints({1}), ints({0}), ints({0})}).empty());  // zero step
  CHECK_FALSE(run_error(op("Slice"), {x, ints({0, 0}), ints({1, 1}), ints({1, -1})}).empty());  // repeated axis
  CHECK_FALSE(run_error(op("Slice"), {x, ints({0}), ints({1}), ints({2})}).empty());
  CHECK_FALSE(run_error(op("Slice"), {x, ints({0}), ints({1, 2})}).empty());
  // step INT64_MIN still safe
  CHECK(fvals(run1(op("Slice"), {x, ints({2}), ints({0}), ints({1}), ints({std::numeric_limits<int64_t>::min()})})) ==
        std::vector<float>{2, 6, 10});
}

TEST_CASE("Expand and Tile", "[tensor_ops]") {
  tensor x = f({3, 1}, {1, 2, 3});
  tensor y = run1(op("Expand"), {x, ints({2, 1, 2})});
  CHECK(y.shape() == shape_t{2, 3, 2});
  CHECK(fvals(y) == std::vector<float>{1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
  CHECK(run1(op("Expand"), {x, ints({1, 1})}).shape() == shape_t{3, 1});
  CHECK_FALSE(run_error(op("Expand"), {x, ints({2, 2})}).empty());
  CHECK_FALSE(run_error(op("Expand"), {x, ints({-1, 1})}).empty());

  tensor t = f({2, 2}, {1, 2, 3, 4});
  tensor tt = run1(op("Tile"), {t, ints({2, 3})});
  CHECK(tt.shape() == shape_t{4, 6});
  CHECK(fvals(tt) == std::vector<float>{1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4,
                                        1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4});
  CHECK(run1(op("Tile"), {t, ints({0, 1})}).shape() == shape_t{0, 2});
  CHECK_FALSE(run_error(op("Tile"), {t, ints({2})}).empty());
  CHECK_FALSE(run_error(op("Tile"), {t, ints({-1, 2})}).empty());
  CHECK_FALSE(run_error(op("Tile"), {t, ints({int64_t{1} << 62, 4})}).empty());
}

TEST_CASE("Pad: constant, reflect, edge, wrap, negative pads, axes", "[tensor_ops]") {
  tensor x = f({2, 3}, {1, 2, 3, 4, 5, 6});
  tensor y = run1(op("Pad"), {x, ints({1, 0, 0, 1}), tensor::scalar<float>(9)});
  CHECK(y.shape() == shape_t{3, 4});
  CHECK(fvals(y) == std::vector<float>{9, 9, 9, 9, 1, 2, 3, 9, 4, 5, 6, 9});
  node r = op("Pad");
  set_s(r, "mode", "reflect");
  CHECK(fvals(run1(r, {x, ints({0, 2, 0, 1})})) ==
        std::vector<float>{3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5});
  node e = op("Pad");
  set_s(e, "mode", "edge");
  CHECK(fvals(run1(e, {x, ints({1, 1, 0, 0})})) == std::vector<float>{1, 1, 2, 3, 1, 1, 2, 3, 4, 4, 5, 6});
  node w = op("Pad", 1, 19);
  set_s(w, "mode", "wrap");
  CHECK(fvals(run1(w, {x, ints({0, 1, 0, 2})})) ==
        std::vector<float>{3, 1, 2, 3, 1, 2, 6, 4, 5, 6, 4, 5});
  // negative pad crops; axes input picks the padded axes
  CHECK(fvals(run1(op("Pad"), {x, ints({0, -1, 0, 0})})) == std::vector<float>{2, 3, 5, 6});
  tensor ya = run1(op("Pad"), {x, ints({1, 1}), tensor(), ints({-1})});
  CHECK(ya.shape() == shape_t{2, 5});
  CHECK(fvals(ya) == std::vector<float>{0, 1, 2, 3, 0, 0, 4, 5, 6, 0});
  // int64 data with int64 constant
  CHECK(ivals(run1(op("Pad"), {i64({2}, {5, 6}), ints({1, 1}), tensor::scalar<int64_t>(-1)})) ==
        std::vector<int64_t>{-1, 5, 6, -1});
  CHECK_FALSE(run_error(op("Pad"), {x, ints({0, -4, 0, 0})}).empty());
  CHECK_FALSE(run_error(op("Pad"), {x, ints({0, 1})}).empty());
  node bad = op("Pad");
  set_s(bad, "mode", "mirror");
  CHECK(run_error(bad, {x, ints({0, 0, 0, 0})}).find("mirror") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Index ops

TEST_CASE("Gather: axes, negative indices, bounds", "[tensor_ops]") {
  tensor x = f({3, 2}, {1, 2, 3, 4, 5, 6});
  tensor y = run1(op("Gather"), {x, i64({2, 2}, {0, 1, 1, 2})});
  CHECK(y.shape() == shape_t{2, 2, 2});
  CHECK(fvals(y) == std::vector<float>{1, 2, 3, 4, 3, 4, 5, 6});
  node g1 = op("Gather");
  set_i(g1, "axis", 1);
  tensor y1 = run1(g1, {x, i32({1}, {-1})});
  CHECK(y1.shape() == shape_t{3, 1});
  CHECK(fvals(y1) == std::vector<float>{2, 4, 6});
  tensor ys = run1(op("Gather"), {x, tensor::scalar<int64_t>(-3)});
  CHECK(ys.shape() == shape_t{2});
  CHECK(fvals(ys) == std::vector<float>{1, 2});
  std::string err = run_error(op("Gather"), {x, i64({2}, {0, 3})});
  CHECK(err.find("3") != std::string::npos);
  CHECK(err.find("Gather") != std::string::npos);
  CHECK_FALSE(run_error(op("Gather"), {x, i64({1}, {-4})}).empty());
  CHECK_FALSE(run_error(op("Gather"), {x, f({1}, {0})}).empty());
  // Embedding-style lookup on a pool.
  thread_pool pool(4);
  tensor emb = iota_f({1000, 64});
  tensor ids = i64({2, 300}, std::vector<int64_t>(600, 7));
  ids.data<int64_t>()[599] = 999;
  tensor e = run1(op("Gather"), {emb, ids}, &pool);
  CHECK(e.shape() == shape_t{2, 300, 64});
  CHECK(e.data<float>()[0] == 7 * 64);
  CHECK(e.data<float>()[599 * 64 + 63] == 999 * 64 + 63);
}

TEST_CASE("GatherElements", "[tensor_ops]") {
  tensor x = f({2, 2}, {1, 2, 3, 4});
  node n = op("GatherElements");
  set_i(n, "axis", 1);
  CHECK(fvals(run1(n, {x, i64({2, 2}, {0, 0, 1, 0})})) == std::vector<float>{1, 1, 4, 3});
  tensor x3 = f({3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  node n0 = op("GatherElements");
  CHECK(fvals(run1(n0, {x3, i32({2, 3}, {1, 2, 0, 2, 0, -1})})) == std::vector<float>{4, 8, 3, 7, 2, 9});
  CHECK_FALSE(run_error(n0, {x3, i64({1, 1}, {3})}).empty());
  CHECK_FALSE(run_error(n0, {x3, i64({1, 4}, {0, 0, 0, 0})}).empty());  // off-axis dim too big
}

TEST_CASE("GatherND with batch_dims", "[tensor_ops]") {
  tensor x = f({2, 2}, {0, 1, 2, 3});
  CHECK(fvals(run1(op("GatherND"), {x, i64({2, 2}, {0, 0, 1, 1})})) == std::vector<float>{0, 3});
  tensor rows = run1(op("GatherND"), {x, i64({2, 1}, {1, 0})});
  CHECK(rows.shape() == shape_t{2, 2});
  CHECK(fvals(rows) == std::vector<float>{2, 3, 0, 1});
  tensor x3 = iota_f({2, 2, 2});
  node b = op("GatherND");
  set_i(b, "batch_dims", 1);
  tensor yb = run1(b, {x3, i64({2, 1}, {1, 0})});
  CHECK(yb.shape() == shape_t{2, 2});
  CHECK(fvals(yb) == std::vector<float>{2, 3, 4, 5});
  CHECK_FALSE(run_error(op("GatherND"), {x, i64({1, 2}, {0, 2})}).empty());
  CHECK_FALSE(run_error(op("GatherND"), {x, i64({1, 3}, {0, 0, 0})}).empty());
}

TEST_CASE("ScatterElements, Scatter and ScatterND with reductions", "[tensor_ops]") {
  tensor x = f({1, 5}, {1, 2, 3, 4, 5});
  node n = op("ScatterElements");
  set_i(n, "axis", 1);
  CHECK(fvals(run1(n, {x, i64({1, 2}, {1, 3}), f({1, 2}, {1.1f, 2.1f})})) ==
        std::vector<float>{1, 1.1f, 3, 2.1f, 5});
  set_s(n, "reduction", "add");
  CHECK(fvals(run1(n, {x, i64({1, 2}, {1, 1}), f({1, 2}, {1.5f, 2.5f})})) == std::vector<float>{1, 6, 3, 4, 5});
  set_s(n, "reduction", "max");
  CHECK(fvals(run1(n, {x, i64({1, 2}, {0, -1}), f({1, 2}, {0, 9})})) == std::vector<float>{1, 2, 3, 4, 9});
  set_s(n, "reduction", "mul");
  CHECK(ivals(run1(n, {i64({1, 2}, {3, 4}), i64({1, 1}, {1}), i64({1, 1}, {5})})) == std::vector<int64_t>{3, 20});
  CHECK_FALSE(run_error(n, {x, i64({1, 1}, {5}), f({1, 1}, {0})}).empty());
  node sc = op("Scatter", 1, 10);
  tensor x33 = tensor::zeros(dtype::f32, {3, 3});
  CHECK(fvals(run1(sc, {x33, i64({2, 3}, {1, 0, 2, 0, 2, 1}), f({2, 3}, {1, 1.1f, 1.2f, 2, 2.1f, 2.2f})})) ==
        std::vector<float>{2, 1.1f, 0, 1, 0, 2.2f, 0, 2.1f, 1.2f});
  node bad = op("ScatterElements");
  set_s(bad, "reduction", "avg");
  CHECK_FALSE(run_error(bad, {x, i64({1, 1}, {0}), f({1, 1}, {0})}).empty());

  tensor d = f({8}, {1, 2, 3, 4, 5, 6, 7, 8});
  CHECK(fvals(run1(op("ScatterND"), {d, i64({4, 1}, {4, 3, 1, 7}), f({4}, {9, 10, 11, 12})})) ==
        std::vector<float>{1, 11, 3, 10, 9, 6, 7, 12});
  node nd = op("ScatterND");
  set_s(nd, "reduction", "add");
  CHECK(fvals(run1(nd, {d, i64({2, 1}, {0, 0}), f({2}, {1, 1})})) == std::vector<float>{3, 2, 3, 4, 5, 6, 7, 8});
  tensor m = f({2, 2}, {1, 2, 3, 4});
  CHECK(fvals(run1(op("ScatterND"), {m, i64({1, 1}, {-1}), f({1, 2}, {7, 8})})) == std::vector<float>{1, 2, 7, 8});
  CHECK_FALSE(run_error(op("ScatterND"), {d, i64({1, 1}, {8}), f({1}, {0})}).empty());
  CHECK_FALSE(run_error(op("ScatterND"), {d, i64({1, 1}, {0}), f({2}, {0, 0})}).empty());
}

TEST_CASE("OneHot", "[tensor_ops]") {
  tensor y = run1(op("OneHot"), {i64({3}, {0, -1, 5}), tensor::scalar<int64_t>(3), f({2}, {0, 1})});
  CHECK(y.shape() == shape_t{3, 3});
  CHECK(fvals(y) == std::vector<float>{1, 0, 0, 0, 0, 1, 0, 0, 0});
  node a0 = op("OneHot");
  set_i(a0, "axis", 0);
  tensor y0 = run1(a0, {f({2}, {1, 0}), tensor::scalar<float>(2), i32({2}, {-1, 7})});
  CHECK(y0.shape() == shape_t{2, 2});
  CHECK(values<int32_t>(y0) == std::vector<int32_t>{-1, 7, 7, -1});
  CHECK_FALSE(run_error(op("OneHot"), {i64({1}, {0}), tensor::scalar<int64_t>(0), f({2}, {0, 1})}).empty());
}

TEST_CASE("NonZero, Trilu", "[tensor_ops]") {
  tensor nz = run1(op("NonZero"), {f({2, 2}, {1, 0, 1, 1})});
  CHECK(nz.shape() == shape_t{2, 3});
  CHECK(ivals(nz) == std::vector<int64_t>{0, 1, 1, 0, 0, 1});
  CHECK(run1(op("NonZero"), {tensor::zeros(dtype::boolean, {4})}).shape() == shape_t{1, 0});

  tensor x = iota_f({3, 4});
  CHECK(fvals(run1(op("Trilu"), {x})) == std::vector<float>{0, 1, 2, 3, 0, 5, 6, 7, 0, 0, 10, 11});
  node lo = op("Trilu");
  set_i(lo, "upper", 0);
  CHECK(fvals(run1(lo, {x, tensor::scalar<int64_t>(-1)})) == std::vector<float>{0, 0, 0, 0, 4, 0, 0, 0, 8, 9, 0, 0});
  CHECK(fvals(run1(op("Trilu"), {x, tensor::scalar<int64_t>(2)})) ==
        std::vector<float>{0, 0, 2, 3, 0, 0, 0, 7, 0, 0, 0, 0});
  CHECK(fvals(run1(lo, {x, tensor::scalar<int64_t>(std::numeric_limits<int64_t>::max())})) == fvals(x));
}

TEST_CASE("ReverseSequence, Compress", "[tensor_ops]") {
  // time_axis 0, batch_axis 1: x[t][b]
  tensor x = iota_f({4, 2});  // column b: (0,2,4,6) and (1,3,5,7)
  tensor y = run1(op("ReverseSequence"), {x, i64({2}, {3, 1})});
  CHECK(fvals(y) == std::vector<float>{4, 1, 2, 3, 0, 5, 6, 7});
  node bt = op("ReverseSequence");
  set_i(bt, "batch_axis", 0);
  set_i(bt, "time_axis", 1);
  CHECK(fvals(run1(bt, {iota_f({2, 3}), i64({2}, {2, 3})})) == std::vector<float>{1, 0, 2, 5, 4, 3});
  CHECK_FALSE(run_error(op("ReverseSequence"), {x, i64({2}, {5, 1})}).empty());

  tensor cx = f({3, 2}, {1, 2, 3, 4, 5, 6});
  tensor cond = tensor::from_vector<bool>({2}, {false, true});
  node c = op("Compress");
  set_i(c, "axis", 0);
  CHECK(fvals(run1(c, {cx, cond})) == std::vector<float>{3, 4});
  set_i(c, "axis", 1);
  CHECK(fvals(run1(c, {cx, cond})) == std::vector<float>{2, 4, 6});
  CHECK(fvals(run1(op("Compress"), {cx, tensor::from_vector<bool>({5}, {false, true, true, false, true})})) ==
        std::vector<float>{2, 3, 5});
  set_i(c, "axis", 1);
  CHECK_FALSE(run_error(c, {cx, tensor::from_vector<bool>({3}, {false, false, true})}).empty());
}

TEST_CASE("Unique: flat sorted/unsorted and along an axis", "[tensor_ops]") {
  auto o = run(op("Unique", 4), {f({6}, {2, 1, 1, 3, 4, 3})});
  CHECK(fvals(o[0]) == std::vector<float>{1, 2, 3, 4});
  CHECK(ivals(o[1]) == std::vector<int64_t>{1, 0, 3, 4});
  CHECK(ivals(o[2]) == std::vector<int64_t>{1, 0, 0, 2, 3, 2});
  CHECK(ivals(o[3]) == std::vector<int64_t>{2, 1, 2, 1});
  node us = op("Unique", 4);
  set_i(us, "sorted", 0);
  auto u = run(us, {f({6}, {2, 1, 1, 3, 4, 3})});
  CHECK(fvals(u[0]) == std::vector<float>{2, 1, 3, 4});
  CHECK(ivals(u[1]) == std::vector<int64_t>{0, 1, 3, 4});
  CHECK(ivals(u[2]) == std::vector<int64_t>{0, 1, 1, 2, 3, 2});
  CHECK(ivals(u[3]) == std::vector<int64_t>{1, 2, 2, 1});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto un = run(op("Unique", 4), {f({5}, {nan, 1, nan, -0.0f, 0.0f})});
  CHECK(un[0].numel() == 3);  // -0 == 0; NaNs group together and sort last
  CHECK(ivals(un[3]) == std::vector<int64_t>{2, 1, 2});
  node ax = op("Unique", 4);
  set_i(ax, "axis", 0);
  auto a = run(ax, {f({3, 3}, {1, 0, 0, 1, 0, 0, 2, 3, 4})});
  CHECK(a[0].shape() == shape_t{2, 3});
  CHECK(fvals(a[0]) == std::vector<float>{1, 0, 0, 2, 3, 4});
  CHECK(ivals(a[1]) == std::vector<int64_t>{0, 2});
  CHECK(ivals(a[2]) == std::vector<int64_t>{0, 0, 1});
  CHECK(ivals(a[3]) == std::vector<int64_t>{2, 1});
  node ax1 = op("Unique", 1);
  set_i(ax1, "axis", -1);
  tensor c = run1(ax1, {f({2, 3}, {3, 1, 3, 0, 5, 0})});
  CHECK(c.shape() == shape_t{2, 2});
  CHECK(fvals(c) == std::vector<float>{1, 3, 5, 0});
}

TEST_CASE("QuantizeLinear / DequantizeLinear", "[tensor_ops]") {
  tensor x = f({6}, {0, 2, 3, 1000, -254, -1000});
  tensor q = run1(op("QuantizeLinear"), {x, tensor::scalar<float>(2), tensor::scalar<uint8_t>(128)});
  CHECK(values<uint8_t>(q) == std::vector<uint8_t>{128, 129, 130, 255, 1, 0});  // 3/2 = 1.5 -> 2 (even)
  tensor qi = run1(op("QuantizeLinear"), {f({3}, {-2.5f, 300, 5}), tensor::scalar<float>(1),
                                          tensor::scalar<int8_t>(0)});
  CHECK(values<int8_t>(qi) == std::vector<int8_t>{-2, 127, 5});
  // default output type uint8
  CHECK(values<uint8_t>(run1(op("QuantizeLinear"), {f({2}, {1, -1}), tensor::scalar<float>(0.5f)})) ==
        std::vector<uint8_t>{2, 0});
  // per axis
  tensor xa = f({1, 2, 2}, {1, 2, 3, 4});
  tensor qa = run1(op("QuantizeLinear"), {xa, f({2}, {1, 2}), tensor::from_vector<uint8_t>({2}, {0, 10})});
  CHECK(values<uint8_t>(qa) == std::vector<uint8_t>{1, 2, 12, 12});

  tensor dq = run1(op("DequantizeLinear"), {tensor::from_vector<uint8_t>({4}, {0, 3, 128, 255}),
                                            tensor::scalar<float>(2), tensor::scalar<uint8_t>(128)});
  CHECK(fvals(dq) == std::vector<float>{-256, -250, 0, 254});
  tensor dqa = run1(op("DequantizeLinear"), {tensor::from_vector<int8_t>({2, 2}, {-1, 2, 3, -4}), f({2}, {1, 0.5f})});
  CHECK(fvals(dqa) == std::vector<float>{-1, 1, 3, -2});
  tensor dq32 = run1(op("DequantizeLinear"), {i32({2}, {-100000, 7}), tensor::scalar<float>(0.5f)});
  CHECK(fvals(dq32) == std::vector<float>{-50000, 3.5f});
  CHECK_FALSE(run_error(op("DequantizeLinear"), {tensor::from_vector<int8_t>({2, 2}, {1, 2, 3, 4}), f({3}, {1, 1, 1})})
                  .empty());
  CHECK_FALSE(run_error(op("DequantizeLinear"), {tensor::from_vector<int8_t>({1}, {1}), tensor::scalar<float>(1),
                                                 tensor::scalar<uint8_t>(0)}).empty());
}

TEST_CASE("DynamicQuantizeLinear", "[tensor_ops]") {
  auto o = run(op("DynamicQuantizeLinear", 3, 11), {f({6}, {0, 2, -3, -2.5f, 1.34f, 0.5f})});
  CHECK(values<uint8_t>(o[0]) == std::vector<uint8_t>{153, 255, 0, 26, 221, 179});
  CHECK(fvals(o[1])[0] == Approx(5.0f / 255.0f));
  CHECK(values<uint8_t>(o[2]) == std::vector<uint8_t>{153});
  auto z = run(op("DynamicQuantizeLinear", 3, 11), {f({2}, {0, 0})});
  CHECK(values<uint8_t>(z[0]) == std::vector<uint8_t>{0, 0});
}
