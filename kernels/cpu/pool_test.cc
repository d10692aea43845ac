#include <limits>

#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

tensor iota_tensor(shape_t s, float start = 1.f) {
  tensor t = tensor::zeros(dtype::f32, std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + static_cast<float>(i);
  return t;
}

node pool_node(const std::string& type, std::vector<int64_t> k, std::vector<int64_t> s = {}, std::vector<int64_t> p = {},
               std::vector<int64_t> d = {}, size_t outputs = 1) {
  node n = op(type, outputs);
  n.attrs["kernel_shape"] = ais(std::move(k));
  if (!s.empty()) n.attrs["strides"] = ais(std::move(s));
  if (!p.empty()) n.attrs["pads"] = ais(std::move(p));
  if (!d.empty()) n.attrs["dilations"] = ais(std::move(d));
  return n;
}

// Brute-force pooling over explicit pads (ceil handled by the caller's out dims).
// kind: 0 max, 1 avg (exclude pad), 2 avg (include pad), 3 lp2.
std::vector<float> ref_pool(const tensor& X, int kind, const std::vector<int64_t>& k, const std::vector<int64_t>& s,
                            const std::vector<int64_t>& pads, const std::vector<int64_t>& dil, const shape_t& out_sp) {
  const size_t nsp = X.rank() - 2;
  int64_t in[3] = {1, 1, 1}, kk[3] = {1, 1, 1}, ss[3] = {1, 1, 1}, dd[3] = {1, 1, 1}, pb[3] = {0, 0, 0}, pe[3] = {0, 0, 0},
          out[3] = {1, 1, 1};
  for (size_t i = 0; i < nsp; ++i) {
    size_t j = 3 - nsp + i;
    in[j] = X.dim(2 + i);
    kk[j] = k[i];
    ss[j] = s.empty() ? 1 : s[i];
    dd[j] = dil.empty() ? 1 : dil[i];
    pb[j] = pads.empty() ? 0 : pads[i];
    pe[j] = pads.empty() ? 0 : pads[nsp + i];
    out[j] = out_sp[i];
  }
  const int64_t planes = X.dim(0) * X.dim(1), S_in = in[0] * in[1] * in[2];
  std::vector<float> y;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t od = 0; od < out[0]; ++od)
      for (int64_t oh = 0; oh < out[1]; ++oh)
        for (int64_t ow = 0; ow < out[2]; ++ow) {
          double acc = kind == 0 ? -std::numeric_limits<double>::infinity() : 0.0;
          int64_t cnt = 0, cnt_pad = 0;
          for (int64_t a = 0; a < kk[0]; ++a)
            for (int64_t b = 0; b < kk[1]; ++b)
              for (int64_t c = 0; c < kk[2]; ++c) {
                int64_t z[3] = {od * ss[0] - pb[0] + a * dd[0], oh * ss[1] - pb[1] + b * dd[1], ow * ss[2] - pb[2] + c * dd[2]};
                bool inside = true, in_pad = true;
                for (int q = 0; q < 3; ++q) {
                  if (z[q] < 0 || z[q] >= in[q]) inside = false;
                  if (z[q] < -pb[q] || z[q] >= in[q] + pe[q]) in_pad = false;
                }
                if (in_pad) ++cnt_pad;
                if (!inside) continue;
                ++cnt;
                double v = X.data<float>()[p * S_in + (z[0] * in[1] + z[1]) * in[2] + z[2]];
                if (kind == 0) acc = std::max(acc, v);
                else if (kind == 3) acc += v * v;
                else acc += v;
              }
          if (kind == 1) acc /= cnt;
          if (kind == 2) acc /= cnt_pad;
          if (kind == 3) acc = std::sqrt(acc);
          y.push_back(static_cast<float>(acc));
        }
  return y;
}

}  // namespace

TEST_CASE("MaxPool hand-checked ONNX examples", "[nn]") {
  tensor X = iota_tensor({1, 1, 5, 5});
  {
    auto r = run(pool_node("MaxPool", {2, 2}, {2, 2}), {X});
    REQUIRE(r);
    check_close((*r)[0], {7, 9, 17, 19});
  }
  {
    auto r = run(pool_node("MaxPool", {5, 5}, {}, {2, 2, 2, 2}), {X});
    REQUIRE(r);
    check_close((*r)[0], {13, 14, 15, 15, 15, 18, 19, 20, 20, 20, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25, 23, 24, 25, 25, 25});
  }
  {
    node n = pool_node("MaxPool", {2, 2}, {2, 2}, {}, {}, 2);
    auto r = run(n, {X});
    REQUIRE(r);
    REQUIRE((*r)[1].type() == dtype::i64);
    const int64_t* idx = (*r)[1].data<int64_t>();
    CHECK(idx[0] == 6);
    CHECK(idx[1] == 8);
    CHECK(idx[2] == 16);
    CHECK(idx[3] == 18);
    n.attrs["storage_order"] = ai(1);
    auto rc = run(n, {X});
    REQUIRE(rc);
    idx = (*rc)[1].data<int64_t>();
    CHECK(idx[0] == 6);
    CHECK(idx[1] == 16);
    CHECK(idx[2] == 8);
    CHECK(idx[3] == 18);
  }
  tensor X4 = iota_tensor({1, 1, 4, 4});
  {
    node n = pool_node("MaxPool", {3, 3}, {2, 2});
    n.attrs["ceil_mode"] = ai(1);
    auto r = run(n, {X4});
    REQUIRE(r);
    check_close((*r)[0], {11, 12, 15, 16});
  }
  {
    auto r = run(pool_node("MaxPool", {2, 2}, {1, 1}, {}, {2, 2}), {X4});
    REQUIRE(r);
    check_close((*r)[0], {11, 12, 15, 16});
  }
  {
    // Indices count the batch and channel (flat index into X).
    tensor X2 = iota_tensor({2, 2, 2, 2});
    auto r = run(pool_node("MaxPool", {2, 2}, {}, {}, {}, 2), {X2});
    REQUIRE(r);
    const int64_t* idx = (*r)[1].data<int64_t>();
    CHECK(idx[0] == 3);
    CHECK(idx[1] == 7);
    CHECK(idx[3] == 15);
  }
  {
    // ceil_mode drops a window that would start in the right padding.
    tensor X2 = iota_tensor({1, 1, 2, 2});
    node n = pool_node("MaxPool", {1, 1}, {2, 2});
    n.attrs["ceil_mode"] = ai(1);
    auto r = run(n, {X2});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{1, 1, 1, 1});
  }
  {
    tensor U = tensor::from_vector<uint8_t>({1, 1, 2, 3}, {1, 200, 3, 4, 5, 255});
    auto r = run(pool_node("MaxPool", {2, 2}), {U});
    REQUIRE(r);
    CHECK((*r)[0].data<uint8_t>()[0] == 200);
    CHECK((*r)[0].data<uint8_t>()[1] == 255);
  }
}

TEST_CASE("AveragePool hand-checked ONNX examples", "[nn]") {
  tensor X = iota_tensor({1, 1, 5, 5});
  {
    auto r = run(pool_node("AveragePool", {5, 5}, {}, {2, 2, 2, 2}), {X});
    REQUIRE(r);
    check_close((*r)[0], {7, 7.5f, 8, 8.5f, 9, 9.5f, 10, 10.5f, 11, 11.5f, 12, 12.5f, 13, 13.5f, 14,
                          14.5f, 15, 15.5f, 16, 16.5f, 17, 17.5f, 18, 18.5f, 19});
  }
  {
    node n = pool_node("AveragePool", {5, 5}, {}, {2, 2, 2, 2});
    n.attrs["count_include_pad"] = ai(1);
    auto r = run(n, {X});
    REQUIRE(r);
    check_close((*r)[0], {2.52f, 3.6f, 4.8f, 4.08f, 3.24f, 4.56f, 6.4f, 8.4f, 7.04f, 5.52f, 7.2f, 10, 13, 10.8f, 8.4f,
                          6.96f, 9.6f, 12.4f, 10.24f, 7.92f, 6.12f, 8.4f, 10.8f, 8.88f, 6.84f});
  }
  {
    node n = pool_node("AveragePool", {3, 3}, {2, 2});
    n.attrs["ceil_mode"] = ai(1);
    auto r = run(n, {iota_tensor({1, 1, 4, 4})});
    REQUIRE(r);
    check_close((*r)[0], {6, 7.5f, 12, 13.5f});
  }
  {
    // SAME_UPPER: 5x5, k 3, s 2 -> 3x3 with pads (1, 1) each side.
    node n = pool_node("AveragePool", {3, 3}, {2, 2});
    n.attrs["auto_pad"] = as("SAME_UPPER");
    auto r = run(n, {X});
    REQUIRE(r);
    auto want = ref_pool(X, 1, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, {3, 3});
    check_close((*r)[0], want);
    n.attrs["auto_pad"] = as("SAME_LOWER");
    n.attrs["kernel_shape"] = ais({2, 2});
    n.attrs["strides"] = ais({1, 1});
    auto r2 = run(n, {X});
    REQUIRE(r2);
    check_close((*r2)[0], ref_pool(X, 1, {2, 2}, {1, 1}, {1, 1, 0, 0}, {}, {5, 5}));
  }
}

TEST_CASE("Pools match brute force in 1-D, 2-D and 3-D", "[nn]") {
  struct c { shape_t x; std::vector<int64_t> k, s, p, d; shape_t out; };
  std::vector<c> cases = {
      {{2, 3, 9, 9}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, {5, 5}},
      {{1, 2, 11}, {4}, {3}, {2, 1}, {}, {4}},
      {{1, 2, 10, 9}, {3, 2}, {1, 2}, {0, 1, 2, 1}, {2, 3}, {8, 4}},
      {{1, 2, 5, 6, 7}, {2, 3, 2}, {2, 1, 2}, {1, 0, 1, 0, 1, 0}, {}, {3, 5, 4}},
      {{1, 1, 3, 3}, {3, 3}, {1, 1}, {2, 2, 2, 2}, {}, {5, 5}},
  };
  uint32_t seed = 300;
  for (auto& cs : cases) {
    tensor X = rnd(cs.x, seed++, -2.f, 2.f);
    for (int kind = 0; kind < 4; ++kind) {
      const char* type = kind == 0 ? "MaxPool" : kind == 3 ? "LpPool" : "AveragePool";
      node n = pool_node(type, cs.k, cs.s, cs.p, cs.d);
      if (kind == 2) n.attrs["count_include_pad"] = ai(1);
      if (kind == 3) n.attrs["p"] = ai(2);
      auto r = run(n, {X});
      REQUIRE(r);
      INFO(type << " kind " << kind << " X " << shape_str(cs.x));
      shape_t ws = {cs.x[0], cs.x[1]};
      ws.insert(ws.end(), cs.out.begin(), cs.out.end());
      CHECK((*r)[0].shape() == ws);
      check_close((*r)[0], ref_pool(X, kind, cs.k, cs.s, cs.p, cs.d, cs.out));
    }
  }
}

TEST_CASE("MaxPool matches brute force on random 1-D and 2-D shapes", "[nn]") {
  // Strides 1 to 3 (1 and 2 along rows read a padded copy of the plane, split into even and odd
  // columns for 2), dilations, uneven pads, ceil mode, rows narrower and wider than a vector,
  // and a NaN, which never replaces the maximum so far.
  dice next(77);
  int ran = 0;
  for (int it = 0; it < 300; ++it) {
    const int64_t nsp = next(1, 4) == 1 ? 1 : 2;
    shape_t x = {next(1, 2), next(1, 3)};
    std::vector<int64_t> k, st, d, pads(2 * static_cast<size_t>(nsp));
    bool fits = true;
    for (int64_t i = 0; i < nsp; ++i) {
      k.push_back(next(1, 5));
      st.push_back(next(1, 3));
      d.push_back(next(1, 4) == 1 ? 2 : 1);
      x.push_back(next(1, 40));
      pads[static_cast<size_t>(i)] = next(0, k.back() - 1);
      pads[static_cast<size_t>(i + nsp)] = next(0, k.back() - 1);
      if (x.back() + pads[static_cast<size_t>(i)] + pads[static_cast<size_t>(i + nsp)] < (k.back() - 1) * d.back() + 1)
        fits = false;
    }
    if (!fits) continue;
    ++ran;
    tensor X = rnd(x, 4000 + static_cast<uint32_t>(it), -2.f, 2.f);
    X.data<float>()[next(0, X.numel() - 1)] = std::numeric_limits<float>::quiet_NaN();
    node n = pool_node("MaxPool", k, st, pads, d);
    if (next(0, 1) == 1) n.attrs["ceil_mode"] = ai(1);
    auto r = run(n, {X});
    REQUIRE(r);
    const shape_t& ys = (*r)[0].shape();
    INFO("case " << it << " X " << shape_str(x) << " Y " << shape_str(ys));
    REQUIRE(ys.size() == x.size());
    shape_t out_sp(ys.begin() + 2, ys.end());
    check_close((*r)[0], ref_pool(X, 0, k, st, pads, d, out_sp));
  }
  CHECK(ran > 200);
}

TEST_CASE("Global pools", "[nn]") {
  tensor X = rnd({2, 3, 5, 7}, 40);
  for (const char* type : {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}) {
    auto r = run(op(type), {X});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{2, 3, 1, 1});
    std::vector<float> want;
    for (int p = 0; p < 6; ++p) {
      double s = 0, m = -1e30, q = 0;
      for (int i = 0; i < 35; ++i) {
        double v = X.data<float>()[p * 35 + i];
        s += v;
        m = std::max(m, v);
        q += v * v;
      }
      want.push_back(static_cast<float>(std::string(type) == "GlobalAveragePool" ? s / 35 :
                                        std::string(type) == "GlobalMaxPool" ? m : std::sqrt(q)));
    }
    INFO(type);
    check_close((*r)[0], want);
  }
  auto r1 = run(op("GlobalAveragePool"), {rnd({1, 4, 6}, 3)});
  REQUIRE(r1);
  CHECK((*r1)[0].shape() == shape_t{1, 4, 1});
  CHECK_FALSE(run(op("GlobalAveragePool"), {rnd({4, 6}, 3)}));
}

TEST_CASE("Pools reject bad attributes cleanly", "[nn]") {
  tensor X = rnd({1, 1, 4, 4}, 1);
  CHECK_FALSE(run(op("MaxPool"), {X}));  // no kernel_shape
  CHECK_FALSE(run(pool_node("MaxPool", {5, 5}), {X}));
  CHECK_FALSE(run(pool_node("MaxPool", {2}), {X}));
  CHECK_FALSE(run(pool_node("MaxPool", {2, 2}, {0, 1}), {X}));
  CHECK_FALSE(run(pool_node("MaxPool", {2, 2}, {}, {1, 1}), {X}));
  CHECK_FALSE(run(pool_node("AveragePool", {2, 2}, {}, {-1, 0, 0, 0}), {X}));
  CHECK_FALSE(run(pool_node("AveragePool", {0, 2}), {X}));
  CHECK(run(pool_node("MaxPool", {2, 2}, {}, {}, {3, 3}), {X}));        // dilated kernel 4 fits
  CHECK_FALSE(run(pool_node("MaxPool", {2, 2}, {}, {}, {4, 4}), {X}));  // dilated kernel 5 does not
  CHECK_FALSE(run(pool_node("MaxPool", {2, 2}), {rnd({4, 4}, 1)}));
  CHECK_FALSE(run(pool_node("MaxPool", {2, 2}), {tensor::zeros(dtype::i64, {1, 1, 4, 4})}));
  node lp = pool_node("LpPool", {2, 2});
  lp.attrs["p"] = ai(0);
  CHECK_FALSE(run(lp, {X}));
}

TEST_CASE("MaxUnpool scatters by index", "[nn]") {
  tensor x = tensor::from_vector<float>({1, 1, 2, 2}, {5, 6, 7, 8});
  tensor idx = tensor::from_vector<int64_t>({1, 1, 2, 2}, {5, 7, 13, 15});
  node n = pool_node("MaxUnpool", {2, 2}, {2, 2});
  auto r = run(n, {x, idx});
  REQUIRE(r);
  CHECK((*r)[0].shape() == shape_t{1, 1, 4, 4});
  check_close((*r)[0], {0, 0, 0, 0, 0, 5, 0, 6, 0, 0, 0, 0, 0, 7, 0, 8});
  auto r2 = run(n, {x, idx, tensor::from_vector<int64_t>({4}, {1, 1, 5, 5})});
  REQUIRE(r2);
  std::vector<float> want(25, 0.f);
  want[6] = 5;
  want[8] = 6;
  want[16] = 7;
  want[18] = 8;
  check_close((*r2)[0], want);
  CHECK_FALSE(run(n, {x, tensor::from_vector<int64_t>({1, 1, 2, 2}, {5, 7, 13, 16})}));  // out of range
  CHECK_FALSE(run(n, {x, idx, tensor::from_vector<int64_t>({4}, {1, 1, 3, 3})}));       // smaller output
  CHECK_FALSE(run(n, {x, tensor::from_vector<int32_t>({1, 1, 2, 2}, {5, 7, 13, 15})}));
}
