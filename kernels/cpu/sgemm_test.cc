#include "kernels/cpu/sgemm.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "engine/thread_pool.h"

using namespace gpugrid;
using namespace gpugrid::cpu;

namespace {

struct mat {
  std::vector<float> v;
  int64_t rs, cs;
  float at(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * rs + j * cs)]; }
};

// A rows x cols matrix stored row-major (or transposed, column-major) with a padded leading
// dimension, so that the strides the packers see are not the shape.
mat random_mat(std::mt19937& rng, int64_t rows, int64_t cols, bool transposed) {
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  mat m;
  const int64_t ld = (transposed ? rows : cols) + 3;
  m.v.resize(static_cast<size_t>(ld * (transposed ? cols : rows)));
  for (auto& x : m.v) x = d(rng);
  m.rs = transposed ? 1 : ld;
  m.cs = transposed ? ld : 1;
  return m;
}

float act_ref(const activation_spec& a, float x) { return activation_reference(a, x); }

struct case_t {
  int64_t m, n, k;
  bool ta, tb, pack_a, pack_b;
  int threads;
  int64_t batch;
  int bias;  // 0 none, 1 per column, 2 per row
  activation_kind act;
  float alpha;
  bool residual = false;  // C = act(alpha A B + R + bias), R laid out as C
};

void check(const case_t& t) {
  CAPTURE(t.m, t.n, t.k, t.ta, t.tb, t.pack_a, t.pack_b, t.threads, t.batch, t.bias, int(t.act), t.alpha, t.residual);
  std::mt19937 rng(static_cast<unsigned>(t.m * 131 + t.n * 17 + t.k));
  std::vector<mat> as, bs;
  // With a prepacked operand every batch item shares it (as a model's weights do).
  for (int64_t i = 0; i < t.batch; ++i) {
    if (i == 0 || !t.pack_a) as.push_back(random_mat(rng, t.m, t.k, t.ta));
    if (i == 0 || !t.pack_b) bs.push_back(random_mat(rng, t.k, t.n, t.tb));
  }
  // Batch items live in one buffer each for A and B, at fixed distances.
  const int64_t astep = static_cast<int64_t>(as[0].v.size()), bstep = static_cast<int64_t>(bs[0].v.size());
  std::vector<float> abig, bbig;
  for (auto& a : as) abig.insert(abig.end(), a.v.begin(), a.v.end());
  for (auto& b : bs) bbig.insert(bbig.end(), b.v.begin(), b.v.end());
  std::vector<float> bias(static_cast<size_t>(std::max(t.m, t.n)));
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto& x : bias) x = d(rng);
  const int64_t ldc = t.n + 5;
  std::vector<float> c(static_cast<size_t>(t.batch * t.m * ldc + 1), 12345.f);
  std::vector<float> res(c.size());
  for (auto& x : res) x = 3.f * d(rng);

  activation_spec act;
  act.kind = t.act;
  act.alpha = 0.1f;
  act.beta = 2.f;
  if (t.act == activation_kind::clip) act.alpha = -0.5f;
  if (t.act == activation_kind::hard_sigmoid) act.alpha = 0.2f, act.beta = 0.5f;
  sgemm::problem p;
  p.m = t.m;
  p.n = t.n;
  p.k = t.k;
  p.a.v = {abig.data(), as[0].rs, as[0].cs};
  p.b.v = {bbig.data(), bs[0].rs, bs[0].cs};
  std::shared_ptr<const sgemm::packed> pa, pb;
  if (t.pack_a) {
    pa = sgemm::packed::left(p.a.v, t.m, t.k);
    REQUIRE(pa);
    p.a.pk = pa.get();
  }
  if (t.pack_b) {
    pb = sgemm::packed::right(p.b.v, t.k, t.n);
    REQUIRE(pb);
    p.b.pk = pb.get();
  }
  p.c = c.data();
  p.ldc = ldc;
  p.ep.alpha = t.alpha;
  p.ep.bias = t.bias ? bias.data() : nullptr;
  p.ep.bias_per_row = t.bias == 2;
  p.ep.act = act;
  if (t.residual) p.ep.residual = res.data();
  p.batch = t.batch;
  p.offsets = [&](int64_t i, int64_t* ao, int64_t* bo, int64_t* co) {
    *ao = t.pack_a ? 0 : i * astep;
    *bo = t.pack_b ? 0 : i * bstep;
    *co = i * t.m * ldc;
  };
  thread_pool pool(t.threads);
  REQUIRE(sgemm::run(&pool, p));

  for (int64_t bi = 0; bi < t.batch; ++bi) {
    const mat& a = as[t.pack_a ? 0 : bi];
    const mat& b = bs[t.pack_b ? 0 : bi];
    for (int64_t i = 0; i < t.m; ++i) {
      for (int64_t j = 0; j < t.n; ++j) {
        double s = 0, mag = 0;
        for (int64_t q = 0; q < t.k; ++q) {
          s += double(a.at(i, q)) * b.at(q, j);
          mag += std::fabs(double(a.at(i, q)) * b.at(q, j));
        }
        float want = static_cast<float>(s) * t.alpha;
        if (t.residual) want += res[static_cast<size_t>(bi * t.m * ldc + i * ldc + j)];
        if (t.bias == 1) want += bias[static_cast<size_t>(j)];
        if (t.bias == 2) want += bias[static_cast<size_t>(i)];
        want = act_ref(act, want);
        const float got = c[static_cast<size_t>(bi * t.m * ldc + i * ldc + j)];
        const double tol = 1e-5 * (mag * std::fabs(t.alpha) + 1) + 1e-4 * std::fabs(want);
        if (!(std::fabs(got - want) <= tol)) {
          CAPTURE(bi, i, j, got, want);
          FAIL("element differs");
        }
      }
      // Padding columns of C are never written.
      for (int64_t j = t.n; j < ldc && (bi * t.m + i) * ldc + j < int64_t(c.size()); ++j)
        REQUIRE(c[static_cast<size_t>(bi * t.m * ldc + i * ldc + j)] == 12345.f);
    }
  }
}

}  // namespace

TEST_CASE("sgemm matches a double-precision product on edge shapes", "[sgemm]") {
  if (!sgemm::available()) {
    WARN("sgemm: this CPU has no AVX2/FMA; the BLAS fallback is used instead");
    return;
  }
  // Shapes around the register block (6 x 16), the cache blocks (KC 256, MC 96, NC 1024) and
  // one element.
  const int64_t ms[] = {1, 5, 6, 7, 13, 16, 32, 39, 97, 130};  // 16, 32, 39: last panels of 4, 2, 3 rows
  const int64_t ns[] = {1, 15, 16, 17, 40, 49};
  const int64_t ks[] = {1, 3, 255, 257};
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) {
        const bool big = m * n * k > 200000;
        check({m, n, k, false, false, false, false, big ? 2 : 1, 1, 0, activation_kind::none, 1.f});
      }
}

TEST_CASE("sgemm with transposed, prepacked and batched operands, threaded", "[sgemm]") {
  if (!sgemm::available()) {
    WARN("sgemm: this CPU has no AVX2/FMA; the BLAS fallback is used instead");
    return;
  }
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool pa : {false, true})
        for (bool pb : {false, true}) {
          check({37, 45, 300, ta, tb, pa, pb, 2, 1, 0, activation_kind::none, 1.f});
          check({200, 1100, 70, ta, tb, pa, pb, 2, 1, 0, activation_kind::none, 1.f});
          check({19, 23, 29, ta, tb, pa, pb, 2, 3, 0, activation_kind::none, 1.f});
        }
  // Tall and wide products that split along rows or columns across threads.
  check({600, 20, 520, false, false, true, false, 3, 1, 0, activation_kind::none, 1.f});
  check({20, 2100, 300, false, false, false, true, 3, 1, 0, activation_kind::none, 1.f});
  // Many small items (attention heads).
  check({64, 64, 32, false, true, false, false, 2, 12, 0, activation_kind::none, 1.f});
  // Column tiles that start at half a panel (AVX-512: 196 columns in two, 112 + 84), with a
  // fused epilogue on the half-width panel.
  check({96, 196, 576, false, false, true, false, 2, 1, 1, activation_kind::relu, 1.f});
  check({40, 200, 300, false, false, true, false, 2, 1, 2, activation_kind::none, 1.f});
}

TEST_CASE("sgemm epilogue: alpha, bias per row or column, activations", "[sgemm]") {
  if (!sgemm::available()) {
    WARN("sgemm: this CPU has no AVX2/FMA; the BLAS fallback is used instead");
    return;
  }
  const activation_kind acts[] = {activation_kind::none,       activation_kind::relu,        activation_kind::clip,
                                  activation_kind::gelu,       activation_kind::silu,        activation_kind::leaky_relu,
                                  activation_kind::hard_swish, activation_kind::hard_sigmoid};
  for (activation_kind a : acts)
    for (int bias : {0, 1, 2}) {
      check({50, 70, 300, false, false, bias == 2, bias == 1, 2, 1, bias, a, 1.f});
      check({9, 33, 5, false, false, false, false, 1, 2, bias, a, 0.5f});
      // Edge tiles of the fused epilogue: 17-31 and under 16 columns, rows past a whole panel.
      check({13, 49, 40, false, false, bias == 2, false, 1, 1, bias, a, 1.f});
      check({21, 12, 7, false, false, false, bias == 1, 1, 1, bias, a, 1.f});
    }
  // K = 0: the result is the epilogue of zero.
  check({7, 9, 0, false, false, false, false, 1, 1, 1, activation_kind::relu, 1.f});
  check({7, 9, 0, false, false, false, false, 2, 2, 2, activation_kind::none, 1.f});
}

TEST_CASE("sgemm epilogue with a residual added before the bias and activation", "[sgemm]") {
  if (!sgemm::available()) {
    WARN("sgemm: this CPU has no AVX2/FMA; the BLAS fallback is used instead");
    return;
  }
  for (activation_kind a : {activation_kind::none, activation_kind::relu, activation_kind::silu,
                            activation_kind::hard_swish})
    for (int bias : {0, 1, 2}) {
      // Whole and edge tiles (17-31 and under 16 columns, rows past a whole panel), one and
      // several k blocks (K over 256), threaded and batched, prepacked weights.
      check({50, 70, 300, false, false, bias == 2, bias == 1, 2, 1, bias, a, 1.f, true});
      check({13, 49, 40, false, false, true, false, 1, 1, bias, a, 1.f, true});
      check({21, 12, 7, false, false, false, bias == 1, 2, 3, bias, a, 1.f, true});
      check({64, 196, 576, false, false, true, false, 2, 1, bias, a, 1.f, true});
    }
  // alpha scales the product only; K = 0 gives the epilogue of the residual.
  check({9, 33, 5, false, false, false, false, 1, 2, 1, activation_kind::relu, 0.5f, true});
  check({7, 9, 0, false, false, false, false, 2, 2, 2, activation_kind::none, 1.f, true});
}
