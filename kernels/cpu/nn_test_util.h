// Helpers shared by the nn kernel tests (gemm_test.cc, conv_test.cc, pool_test.cc, ...).
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/op_runner.h"
#include "engine/thread_pool.h"
#include "kernels/cpu/cpu_ops.h"

namespace gpugrid::nntest {

inline tensor rnd(shape_t shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  tensor t = tensor::zeros(dtype::f32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(gen);
  return t;
}

// Integers uniform in [lo, hi] from one seed, the same on every machine (the tests over random
// shapes).
class dice {
 public:
  explicit dice(uint32_t seed) : state_(seed) {}
  int64_t operator()(int64_t lo, int64_t hi) {
    state_ = state_ * 1664525u + 1013904223u;
    return lo + static_cast<int64_t>((state_ >> 8) % static_cast<uint32_t>(hi - lo + 1));
  }

 private:
  uint32_t state_;
};

inline attribute ai(int64_t v) { attribute a; a.type = attribute::kind::integer; a.i = v; return a; }
inline attribute af(float v) { attribute a; a.type = attribute::kind::floating; a.f = v; return a; }
inline attribute as(const std::string& v) { attribute a; a.type = attribute::kind::string; a.s = v; return a; }
inline attribute ais(std::vector<int64_t> v) { attribute a; a.type = attribute::kind::ints; a.ints = std::move(v); return a; }

inline thread_pool& pool2() {
  static thread_pool p(2);
  return p;
}

// Runs one op on the CPU registry; `constant` makes the inputs visible to prepare().
inline expected<std::vector<tensor>> run(node n, const std::vector<tensor>& in, bool constant = false,
                                         bool parallel = true) {
  return run_single_op(cpu::registry(), std::move(n), in, parallel ? &pool2() : nullptr, constant);
}

inline node op(const std::string& type, size_t outputs = 1, int opset = 17, const std::string& domain = "") {
  node n = make_node(type, outputs, opset);
  n.domain = domain;
  return n;
}

// Max |a - b| / (atol + rtol |b|) <= 1 elementwise, with a readable failure.
inline void check_close(const tensor& got, const std::vector<float>& want, float atol = 1e-5f, float rtol = 1e-4f) {
  REQUIRE(got.type() == dtype::f32);
  REQUIRE(got.numel() == static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    float g = got.data<float>()[i], w = want[i];
    if (!(std::abs(g - w) <= atol + rtol * std::abs(w))) {
      FAIL_CHECK("element " << i << ": got " << g << ", want " << w);
      return;
    }
  }
}

inline std::vector<float> values(const tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

}  // namespace gpugrid::nntest
