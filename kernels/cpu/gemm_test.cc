#include <cblas.h>

#include <cstdlib>

#include "engine/session.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/nn_test_util.h"
#include "kernels/cpu/sgemm.h"

using namespace gpugrid;
using namespace gpugrid::nntest;

namespace {

// numpy.matmul by definition.
std::vector<float> ref_matmul(const tensor& A, const tensor& B, shape_t* out_shape) {
  shape_t a = A.shape(), b = B.shape();
  bool dm = a.size() == 1, dn = b.size() == 1;
  if (dm) a.insert(a.begin(), 1);
  if (dn) b.push_back(1);
  int64_t M = a[a.size() - 2], K = a.back(), N = b.back();
  shape_t ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2), batch;
  REQUIRE(cpu::broadcast_shapes(ab, bb, &batch));
  auto sa = cpu::broadcast_strides(ab, batch), sb = cpu::broadcast_strides(bb, batch);
  int64_t nb = num_elements(batch);
  std::vector<float> out(static_cast<size_t>(nb * M * N));
  std::vector<int64_t> idx(batch.size(), 0);
  for (int64_t i = 0; i < nb; ++i) {
    int64_t ao = 0, bo = 0, r = i;
    for (size_t d = batch.size(); d-- > 0;) {
      idx[d] = r % batch[d];
      r /= batch[d];
    }
    for (size_t d = 0; d < batch.size(); ++d) {
      ao += idx[d] * sa[d];
      bo += idx[d] * sb[d];
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += double(A.data<float>()[ao * M * K + m * K + k]) * B.data<float>()[bo * K * N + k * N + n];
        out[static_cast<size_t>((i * M + m) * N + n)] = static_cast<float>(s);
      }
  }
  *out_shape = batch;
  if (!dm) out_shape->push_back(M);
  if (!dn) out_shape->push_back(N);
  return out;
}

}  // namespace

TEST_CASE("activation vector paths match the scalar definitions", "[nn]") {
  using cpu::activation_kind;
  std::vector<cpu::activation_spec> specs = {
      {activation_kind::relu, 0, 0},       {activation_kind::leaky_relu, 0.1f, 0},
      {activation_kind::sigmoid, 0, 0},    {activation_kind::tanh, 0, 0},
      {activation_kind::clip, -0.5f, 2.f}, {activation_kind::hard_sigmoid, 0.2f, 0.5f},
      {activation_kind::hard_swish, 0, 0}, {activation_kind::silu, 0, 0},
      {activation_kind::gelu, 0, 0},
  };
  std::vector<float> xs;
  for (float v = -20.f; v <= 20.f; v += 0.01953125f) xs.push_back(v);
  for (float v : {0.f, -0.f, 1e-6f, -1e-6f, 3e-4f, 1e-3f, 88.f, -88.f, 100.f, -100.f, 1e30f, -1e30f, 3.4e38f, -3.4e38f})
    xs.push_back(v);
  xs.push_back(0.123f);  // odd length: exercises the tail
  for (auto& s : specs) {
    std::vector<float> d = xs;
    cpu::apply_activation(s, d.data(), static_cast<int64_t>(d.size()));
    float worst = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      float want = cpu::activation_reference(s, xs[i]);
      float err = std::abs(d[i] - want) / (1.f + std::abs(want));
      worst = std::max(worst, err);
      if (!(err <= 2e-6f)) {
        FAIL_CHECK("activation " << int(s.kind) << " at x=" << xs[i] << ": got " << d[i] << ", want " << want);
        break;
      }
    }
    INFO("kind " << int(s.kind) << " worst " << worst);
    CHECK(worst <= 2e-6f);
  }
  // NaN stays NaN and the infinities go to the limits, in place and out of place (the
  // standalone activation ops), through the vector body and the tail.
  const float inf = std::numeric_limits<float>::infinity(), qnan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> odd(19, 0.5f);
  odd[3] = qnan, odd[4] = inf, odd[5] = -inf, odd[17] = qnan, odd[18] = -inf;
  for (auto& s : specs) {
    if (s.kind == activation_kind::gelu) continue;  // fused Gelu at -inf: not its -0 limit
    std::vector<float> out(odd.size());
    cpu::apply_activation(s, odd.data(), out.data(), static_cast<int64_t>(odd.size()));
    for (size_t i = 0; i < odd.size(); ++i) {
      const float want = cpu::activation_reference(s, odd[i]);
      INFO("kind " << int(s.kind) << " x " << odd[i] << " got " << out[i] << " want " << want);
      if (std::isnan(want)) CHECK(std::isnan(out[i]));
      else if (std::isinf(want)) CHECK(out[i] == want);
      else CHECK(std::abs(out[i] - want) <= 2e-6f * (1.f + std::abs(want)));
    }
  }
  // Sigmoid's small values keep their relative accuracy down to x = -87 (not only an absolute
  // error below 1e-7, as a rational approximation around 1/2 would give).
  {
    const cpu::activation_spec sig{activation_kind::sigmoid, 0, 0};
    std::vector<float> neg;
    for (float v = -87.f; v <= 0.f; v += 0.0107f) neg.push_back(v);
    std::vector<float> d = neg;
    cpu::apply_activation(sig, d.data(), static_cast<int64_t>(d.size()));
    float worst = 0;
    for (size_t i = 0; i < neg.size(); ++i) {
      const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(neg[i])));
      worst = std::max(worst, static_cast<float>(std::abs(d[i] - want) / want));
    }
    CHECK(worst <= 1e-5f);
  }
  // Bias forms.
  cpu::activation_spec relu{activation_kind::relu, 0, 0};
  std::vector<float> d = {-1, 0.5f, 2, -3, 4, 5, 6, 7, 8, -9, 10};
  std::vector<float> bias = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  auto d2 = d;
  cpu::apply_activation(relu, d.data(), 11, 0.75f);
  cpu::apply_activation(relu, d2.data(), 11, bias.data());
  CHECK(d[0] == 0.f);
  CHECK(d[1] == 1.25f);
  CHECK(d[10] == 10.75f);
  CHECK(d2[3] == 0.f);
  CHECK(d2[4] == 5.f);
  CHECK(d2[9] == 0.f);
  // The same two bias forms through the exponential-based activations (their own vector code
  // on AVX-512), over a vector and a tail.
  for (activation_kind k : {activation_kind::silu, activation_kind::sigmoid}) {
    const cpu::activation_spec sp{k, 0, 0};
    std::vector<float> v(37), vb(37);
    for (size_t i = 0; i < v.size(); ++i) {
      v[i] = -9.f + 0.5f * static_cast<float>(i);
      vb[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
    }
    auto a1 = v, a2 = v;
    cpu::apply_activation(sp, a1.data(), 37, 0.75f);
    cpu::apply_activation(sp, a2.data(), 37, vb.data());
    for (size_t i = 0; i < v.size(); ++i) {
      const float w1 = cpu::activation_reference(sp, v[i] + 0.75f), w2 = cpu::activation_reference(sp, v[i] + vb[i]);
      CHECK(std::abs(a1[i] - w1) <= 2e-6f * (1.f + std::abs(w1)));
      CHECK(std::abs(a2[i] - w2) <= 2e-6f * (1.f + std::abs(w2)));
    }
  }
}

TEST_CASE("parse_activation reads the fused attributes", "[nn]") {
  node n = op("FusedConv", 1, 1, "com.gpugrid");
  n.attrs["activation"] = as("LeakyRelu");
  auto a = cpu::parse_activation(n);
  REQUIRE(a);
  CHECK(a->kind == cpu::activation_kind::leaky_relu);
  CHECK(a->alpha == Approx(0.01f));
  n.attrs["activation"] = as("Clip");
  n.attrs["activation_alpha"] = af(0.f);
  n.attrs["activation_beta"] = af(6.f);
  a = cpu::parse_activation(n);
  REQUIRE(a);
  CHECK(a->kind == cpu::activation_kind::clip);
  CHECK(a->beta == 6.f);
  n.attrs["activation"] = as("Swish2");
  CHECK_FALSE(cpu::parse_activation(n));
  n.attrs.erase("activation");
  a = cpu::parse_activation(n);
  REQUIRE(a);
  CHECK(a->is_none());
}

TEST_CASE("MatMul hand-checked and numpy semantics", "[nn]") {
  {
    tensor A = tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
    tensor B = tensor::from_vector<float>({3, 2}, {7, 8, 9, 10, 11, 12});
    auto r = run(op("MatMul"), {A, B});
    REQUIRE(r);
    CHECK((*r)[0].shape() == shape_t{2, 2});
    check_close((*r)[0], {58, 64, 139, 154});
  }
  struct c { shape_t a, b; };
  std::vector<c> cases = {
      {{7, 33}, {33, 19}},       {{2, 3, 7, 16}, {2, 3, 16, 5}}, {{2, 9, 16}, {16, 12}},
      {{2, 1, 4, 8}, {3, 8, 5}}, {{8}, {8, 5}},                  {{4, 8}, {8}},
      {{8}, {8}},                {{3, 8}, {2, 8, 4}},            {{1, 64}, {64, 300}},
      {{2, 3, 5}, {1, 5, 2}},    {{6, 1, 300}, {300, 7}},        {{2, 0, 4}, {4, 3}},
      {{3, 0}, {0, 4}},          {{40, 5, 6}, {40, 6, 3}},
  };
  uint32_t seed = 1;
  for (auto& cs : cases) {
    tensor A = rnd(cs.a, seed++), B = rnd(cs.b, seed++);
    for (bool constant : {false, true}) {
      auto r = run(op("MatMul"), {A, B}, constant);
      REQUIRE(r);
      shape_t want_shape;
      auto want = ref_matmul(A, B, &want_shape);
      INFO(shape_str(cs.a) << " x " << shape_str(cs.b));
      CHECK((*r)[0].shape() == want_shape);
      check_close((*r)[0], want);
    }
  }
}

TEST_CASE("MatMul double and integer types", "[nn]") {
  tensor A = tensor::from_vector<int32_t>({2, 2, 3}, {1, 2, 3, 4, 5, 6, -1, 0, 1, 2, 2, 2});
  tensor B = tensor::from_vector<int32_t>({3, 1}, {1, 10, 100});
  auto r = run(op("MatMul"), {A, B});
  REQUIRE(r);
  REQUIRE((*r)[0].shape() == shape_t{2, 2, 1});
  const int32_t* y = (*r)[0].data<int32_t>();
  CHECK(y[0] == 321);
  CHECK(y[1] == 654);
  CHECK(y[2] == 99);
  CHECK(y[3] == 222);
  tensor Ad = tensor::from_vector<double>({1, 2}, {0.5, 0.25});
  tensor Bd = tensor::from_vector<double>({2, 2}, {2, 4, 8, 16});
  auto rd = run(op("MatMul"), {Ad, Bd});
  REQUIRE(rd);
  CHECK((*rd)[0].data<double>()[0] == 3.0);
  CHECK((*rd)[0].data<double>()[1] == 6.0);
  tensor L = tensor::from_vector<int64_t>({2}, {3, 4});
  auto rl = run(op("MatMul"), {L, L});
  REQUIRE(rl);
  CHECK((*rl)[0].shape().empty());
  CHECK((*rl)[0].data<int64_t>()[0] == 25);
}

TEST_CASE("MatMul rejects bad inputs cleanly", "[nn]") {
  CHECK_FALSE(run(op("MatMul"), {rnd({2, 3}, 1), rnd({4, 2}, 2)}));
  CHECK_FALSE(run(op("MatMul"), {rnd({2, 2, 3}, 1), rnd({3, 3, 2}, 2)}));
  CHECK_FALSE(run(op("MatMul"), {rnd({2, 3}, 1), tensor::from_vector<double>({3, 1}, {1, 2, 3})}));
  CHECK_FALSE(run(op("MatMul"), {rnd({2, 3}, 1)}));
  CHECK_FALSE(run(op("MatMul"), {tensor::scalar<float>(1.f), rnd({1}, 2)}));
  auto r = run(op("MatMul"), {rnd({2, 3}, 1), rnd({4, 2}, 2)});
  CHECK(r.error().message().find("inner dimensions") != std::string::npos);
}

TEST_CASE("Gemm attributes and C broadcasting", "[nn]") {
  // One row takes the matrix-vector path (split over threads from about 2^17 products on).
  const int64_t sizes[][3] = {{5, 7, 6}, {1, 7, 6}, {1, 517, 301}};
  for (const auto& mkn : sizes) {
    const int64_t M = mkn[0], K = mkn[1], N = mkn[2];
    INFO("M " << M << " K " << K << " N " << N);
    tensor A = rnd({M, K}, 11), At = tensor::zeros(dtype::f32, {K, M});
    tensor B = rnd({K, N}, 12), Bt = tensor::zeros(dtype::f32, {N, K});
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) At.data<float>()[k * M + i] = A.data<float>()[i * K + k];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) Bt.data<float>()[j * K + k] = B.data<float>()[k * N + j];
    std::vector<shape_t> cshapes = {{}, {N}, {1, N}, {M, 1}, {M, N}, {1}, {1, 1}};
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (auto& cs : cshapes)
          for (int with_c = 0; with_c < 2; ++with_c) {
            node n = op("Gemm");
            n.attrs["alpha"] = af(0.5f);
            n.attrs["beta"] = af(2.f);
            n.attrs["transA"] = ai(ta);
            n.attrs["transB"] = ai(tb);
            tensor C = rnd(cs, 13);
            std::vector<tensor> in = {ta ? At : A, tb ? Bt : B};
            if (with_c) in.push_back(C);
            auto r = run(n, in);
            REQUIRE(r);
            std::vector<float> want(static_cast<size_t>(M * N));
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) {
                double s = 0;
                for (int64_t k = 0; k < K; ++k) s += double(A.data<float>()[i * K + k]) * B.data<float>()[k * N + j];
                double c = 0;
                if (with_c) {
                  int64_t cr = cs.size() == 2 ? cs[0] : 1, cc = cs.empty() ? 1 : cs.back();
                  c = C.data<float>()[(cr == 1 ? 0 : i) * cc + (cc == 1 ? 0 : j)];
                }
                want[static_cast<size_t>(i * N + j)] = static_cast<float>(0.5 * s + 2.0 * c);
              }
            INFO("transA " << ta << " transB " << tb << " C " << shape_str(cs) << " with_c " << with_c);
            check_close((*r)[0], want);
          }
  }
  const int64_t M = 5, K = 7, N = 6;
  tensor A = rnd({M, K}, 11), B = rnd({K, N}, 12);
  // Bad C.
  CHECK_FALSE(run(op("Gemm"), {A, B, rnd({2, N}, 3)}));
  CHECK_FALSE(run(op("Gemm"), {A, rnd({K + 1, N}, 3)}));
  CHECK_FALSE(run(op("Gemm"), {rnd({2, M, K}, 3), B}));
}

TEST_CASE("FusedGemm and FusedMatMul apply bias and activation", "[nn]") {
  tensor A = rnd({2, 9, 16}, 21), B = rnd({16, 12}, 22), bias = rnd({12}, 23);
  for (const char* act : {"", "Relu", "Gelu", "Sigmoid", "Tanh", "Silu", "HardSwish", "LeakyRelu"}) {
    node n = op("FusedMatMul", 1, 1, "com.gpugrid");
    if (*act) n.attrs["activation"] = as(act);
    auto spec = cpu::parse_activation(n);
    REQUIRE(spec);
    for (bool with_bias : {false, true}) {
      std::vector<tensor> in = {A, B};
      if (with_bias) in.push_back(bias);
      auto r = run(n, in, true);
      REQUIRE(r);
      shape_t s;
      auto want = ref_matmul(A, B, &s);
      for (size_t i = 0; i < want.size(); ++i)
        want[i] = cpu::activation_reference(*spec, want[i] + (with_bias ? bias.data<float>()[i % 12] : 0.f));
      INFO("activation " << act << " bias " << with_bias);
      CHECK((*r)[0].shape() == s);
      check_close((*r)[0], want);
    }
  }
  CHECK_FALSE(run(op("FusedMatMul", 1, 1, "com.gpugrid"), {A, B, rnd({11}, 1)}));

  node g = op("FusedGemm", 1, 1, "com.gpugrid");
  g.attrs["activation"] = as("Clip");
  g.attrs["activation_alpha"] = af(-0.25f);
  g.attrs["activation_beta"] = af(0.25f);
  g.attrs["transB"] = ai(1);
  tensor GB = rnd({6, 8}, 32), GC = rnd({1, 6}, 33);
  for (int rows : {5, 1}) {  // one row: the matrix-vector path
    tensor GA = rnd({rows, 8}, 31);
    auto r = run(g, {GA, GB, GC});
    REQUIRE(r);
    std::vector<float> want(static_cast<size_t>(rows * 6));
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < 6; ++j) {
        double s = GC.data<float>()[j];
        for (int k = 0; k < 8; ++k) s += double(GA.data<float>()[i * 8 + k]) * GB.data<float>()[j * 8 + k];
        want[i * 6 + j] = std::min(0.25f, std::max(-0.25f, static_cast<float>(s)));
      }
    check_close((*r)[0], want);
  }
  tensor GA = rnd({5, 8}, 31);
  node bad = op("FusedGemm", 1, 1, "com.gpugrid");
  bad.attrs["activation"] = as("Softplus");
  CHECK_FALSE(run(bad, {GA, GB}));
}

TEST_CASE("MatMulInteger with zero points", "[nn]") {
  tensor A = tensor::from_vector<uint8_t>({2, 3}, {11, 7, 3, 10, 6, 2});
  tensor B = tensor::from_vector<uint8_t>({3, 2}, {1, 4, 2, 5, 3, 6});
  tensor az = tensor::scalar<uint8_t>(12);
  tensor bz = tensor::from_vector<uint8_t>({2}, {1, 2});
  auto r = run(op("MatMulInteger"), {A, B, az, bz});
  REQUIRE(r);
  REQUIRE((*r)[0].type() == dtype::i32);
  // (A - 12) = [[-1,-5,-9],[-2,-6,-10]]; (B - [1,2]) = [[0,2],[1,3],[2,4]]
  const int32_t* y = (*r)[0].data<int32_t>();
  CHECK(y[0] == -23);
  CHECK(y[1] == -53);
  CHECK(y[2] == -26);
  CHECK(y[3] == -62);
}

TEST_CASE("QLinearMatMul hand-checked ONNX example", "[nn]") {
  tensor a = tensor::from_vector<uint8_t>({2, 4}, {208, 236, 0, 238, 3, 214, 255, 29});
  tensor b = tensor::from_vector<uint8_t>({4, 3}, {152, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247});
  auto r = run(op("QLinearMatMul", 1, 10),
               {a, tensor::scalar<float>(0.0066f), tensor::scalar<uint8_t>(113), b, tensor::scalar<float>(0.00705f),
                tensor::scalar<uint8_t>(114), tensor::scalar<float>(0.0107f), tensor::scalar<uint8_t>(118)});
  REQUIRE(r);
  REQUIRE((*r)[0].type() == dtype::u8);
  const uint8_t* y = (*r)[0].data<uint8_t>();
  std::vector<int> got(y, y + 6);
  CHECK(got == std::vector<int>{168, 115, 255, 1, 66, 151});
  CHECK_FALSE(run(op("QLinearMatMul", 1, 10), {a, tensor::scalar<float>(1.f)}));
}

TEST_CASE("OpenBLAS keeps one thread where the engine's own products run", "[nn]") {
  (void)cpu::registry();  // building it applies the limit
  const bool user_chose = std::getenv("OPENBLAS_NUM_THREADS") || std::getenv("GOTO_NUM_THREADS") ||
                          std::getenv("OMP_NUM_THREADS");
  set_blas_threads(4);
  const int expected = cpu::sgemm::available() && !user_chose ? 1 : 4;
  CHECK(openblas_get_num_threads() == expected);
  set_blas_threads(0);
}
