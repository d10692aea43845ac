// The com.microsoft kernels (contrib_*.cc) on what the onnxruntime comparison
// (tests/op_cases_test.sh) cannot cover: bfloat16 inputs (onnxruntime's CPU kernels take none),
// the MatMulNBits paths against a plain dequantized product, and bad inputs.
#include <catch2/catch.hpp>

#include <cmath>

#include "kernels/cpu/nn_test_util.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

const char* ms = "com.microsoft";

tensor to_type(const tensor& t, dtype type) {
  tensor o = tensor::zeros(type, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = t.data<float>()[i];
    if (type == dtype::bf16) o.data<bfloat16>()[i] = bfloat16(v);
    else if (type == dtype::f16) o.data<half>()[i] = half(v);
    else o.data<float>()[i] = v;
  }
  return o;
}

std::vector<float> as_floats(const tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = static_cast<float>(t.as_double(i));
  return v;
}

// Random 4-bit weights: B [N, K / block, block / 2], scales, packed zero points; and W [N, K]
// dequantized by hand.
struct nbits_weights {
  tensor B, scales, zp;
  std::vector<float> w;
};
nbits_weights make_nbits(int64_t N, int64_t K, int64_t block, uint32_t seed) {
  const int64_t kb = K / block;
  nbits_weights r;
  r.B = tensor::zeros(dtype::u8, {N, kb, block / 2});
  r.scales = rnd({N * kb}, seed, 0.01f, 0.05f);
  r.zp = tensor::zeros(dtype::u8, {N * ((kb + 1) / 2)});
  r.w.resize(static_cast<size_t>(N * K));
  uint32_t x = seed;
  auto next = [&] { x = x * 1664525u + 1013904223u; return (x >> 24) & 15u; };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < kb; ++b) {
      const uint32_t z = next();
      r.zp.data<uint8_t>()[n * ((kb + 1) / 2) + b / 2] |= static_cast<uint8_t>(z << (4 * (b % 2)));
      for (int64_t i = 0; i < block; ++i) {
        const uint32_t q = next();
        r.B.data<uint8_t>()[(n * kb + b) * (block / 2) + i / 2] |= static_cast<uint8_t>(q << (4 * (i % 2)));
        r.w[n * K + b * block + i] = (static_cast<float>(q) - static_cast<float>(z)) * r.scales.data<float>()[n * kb + b];
      }
    }
  return r;
}

node nbits_node(int64_t K, int64_t N, int64_t block) {
  node n = op("MatMulNBits", 1, 1, ms);
  n.attrs["K"] = ai(K);
  n.attrs["N"] = ai(N);
  n.attrs["bits"] = ai(4);
  n.attrs["block_size"] = ai(block);
  return n;
}

}  // namespace

TEST_CASE("MatMulNBits: decoding and prompt paths equal the dequantized float product", "[contrib]") {
  const int64_t N = 70, K = 128, block = 32;
  nbits_weights w = make_nbits(N, K, block, 7);
  for (int64_t M : {1, 3, 9}) {
    tensor A = rnd({M, K}, 100 + static_cast<uint32_t>(M));
    auto out = run(nbits_node(K, N, block), {A, w.B, w.scales, w.zp});
    REQUIRE(out);
    std::vector<float> want(static_cast<size_t>(M * N), 0.f);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) want[m * N + n] += A.data<float>()[m * K + k] * w.w[n * K + k];
    INFO("M = " << M);
    check_close((*out)[0], want, 1e-4f, 1e-4f);
  }
}

TEST_CASE("MatMulNBits: weights that do not match K, N and block_size are one-line errors", "[contrib]") {
  nbits_weights w = make_nbits(8, 64, 32, 3);
  tensor A = rnd({1, 64}, 1);
  SECTION("block size that does not divide the stored blocks") {
    auto out = run(nbits_node(64, 8, 16), {A, w.B, w.scales, w.zp});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("does not hold N=8 columns of 4 blocks") != std::string::npos);
  }
  SECTION("block size not a power of two") {
    auto out = run(nbits_node(64, 8, 24), {A, w.B, w.scales, w.zp});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("power of 2") != std::string::npos);
  }
  SECTION("A's last axis is not K") {
    auto out = run(nbits_node(64, 8, 32), {rnd({1, 60}, 2), w.B, w.scales, w.zp});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("attribute K is 64") != std::string::npos);
  }
}

TEST_CASE("contrib ops: bfloat16 and float16 inputs give the float results in their type", "[contrib]") {
  tensor x = rnd({2, 3, 16}, 21), skip = rnd({2, 3, 16}, 22), gamma = rnd({16}, 23);
  node n = op("SkipSimplifiedLayerNormalization", 1, 1, ms);
  auto ref = run(n, {x, skip, gamma});
  REQUIRE(ref);
  for (dtype t : {dtype::bf16, dtype::f16}) {
    auto got = run(n, {to_type(x, t), to_type(skip, t), to_type(gamma, t)});
    REQUIRE(got);
    REQUIRE((*got)[0].type() == t);
    const std::vector<float> g = as_floats((*got)[0]);
    const std::vector<float> r = values((*ref)[0]);
    const float tol = t == dtype::bf16 ? 0.05f : 0.01f;
    for (size_t i = 0; i < g.size(); ++i) CHECK(std::abs(g[i] - r[i]) <= tol * (1.f + std::abs(r[i])));
  }
}

TEST_CASE("GroupQueryAttention: bad head counts and sequence lengths are one-line errors", "[contrib]") {
  const int64_t B = 1, S = 2, H = 16;
  tensor q = rnd({B, S, 4 * H}, 1), k = rnd({B, S, 2 * H}, 2), v = rnd({B, S, 2 * H}, 3);
  tensor pk = tensor::zeros(dtype::f32, {B, 2, 0, H}), pv = pk;
  tensor total = tensor::scalar<int32_t>(2);
  SECTION("num_heads not a multiple of kv_num_heads") {
    node n = op("GroupQueryAttention", 3, 1, ms);
    n.attrs["num_heads"] = ai(3);
    n.attrs["kv_num_heads"] = ai(2);
    auto out = run(n, {q, k, v, pk, pv, tensor::from_vector<int32_t>({1}, {1}), total});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("multiple of kv_num_heads") != std::string::npos);
  }
  SECTION("seqlens_k beyond the cache") {
    node n = op("GroupQueryAttention", 3, 1, ms);
    n.attrs["num_heads"] = ai(4);
    n.attrs["kv_num_heads"] = ai(2);
    auto out = run(n, {q, k, v, pk, pv, tensor::from_vector<int32_t>({1}, {9}), total});
    REQUIRE_FALSE(out);
    CHECK(out.error().message().find("seqlens_k[0] = 9") != std::string::npos);
  }
}

TEST_CASE("MatMulNBits: g_idx in natural order gives the plain blockwise result", "[contrib]") {
  const int64_t N = 12, K = 64, block = 32;
  nbits_weights w = make_nbits(N, K, block, 5);
  tensor A = rnd({3, K}, 9);
  std::vector<int32_t> order(K);
  for (int64_t k = 0; k < K; ++k) order[k] = static_cast<int32_t>(k / block);
  tensor g = tensor::from_vector<int32_t>({K}, order);
  auto plain = run(nbits_node(K, N, block), {A, w.B, w.scales, w.zp});
  auto with_g = run(nbits_node(K, N, block), {A, w.B, w.scales, w.zp, g});
  REQUIRE(plain);
  REQUIRE(with_g);
  check_close((*with_g)[0], values((*plain)[0]), 1e-5f, 1e-5f);
  order[0] = 2;  // not a block
  auto bad = run(nbits_node(K, N, block), {A, w.B, w.scales, w.zp, tensor::from_vector<int32_t>({K}, order)});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("g_idx[0] = 2") != std::string::npos);
}
