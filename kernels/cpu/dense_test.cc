// dense::matmul and dense::matmul_f16b for one row (a decode step's matrix-vector product):
// the rows of B split among tasks give the plain product, for ragged K and N and any pool size.
#include "kernels/cpu/dense.h"

#include <cmath>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/thread_pool.h"

using namespace gpugrid;

TEST_CASE("dense: one-row products equal the plain sum for ragged shapes and pool sizes", "[dense]") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int threads : {1, 2, 3}) {
    thread_pool pool(threads);
    for (int64_t k : {5, 64, 99, 700})
      for (int64_t n : {40, 1100, 4099}) {
        INFO("threads " << threads << " k " << k << " n " << n);
        std::vector<float> a(k), b(k * n), bias(n), c(n, 7.f), ch(n, 7.f);
        std::vector<half> bh(k * n);
        for (auto& x : a) x = u(rng);
        for (size_t i = 0; i < b.size(); ++i) bh[i] = half(b[i] = u(rng));
        for (auto& x : bias) x = u(rng);
        REQUIRE(cpu::dense::matmul(&pool, 1, n, k, a.data(), k, b.data(), n, false, c.data(), n, 0.5f, bias.data()));
        REQUIRE(cpu::dense::matmul_f16b(&pool, 1, n, k, a.data(), k, bh.data(), n, ch.data(), n));
        double worst = 0, worst_h = 0;
        for (int64_t j = 0; j < n; ++j) {
          double s = 0, sh = 0;
          for (int64_t p = 0; p < k; ++p) {
            s += double(a[p]) * b[p * n + j];
            sh += double(a[p]) * float(bh[p * n + j]);
          }
          worst = std::max(worst, std::fabs(c[j] - (0.5 * s + bias[j])));
          worst_h = std::max(worst_h, std::fabs(ch[j] - sh));
        }
        CHECK(worst < 1e-4 * std::sqrt(double(k)));
        CHECK(worst_h < 1e-4 * std::sqrt(double(k)));
      }
  }
}
