#include "kernels/cpu/activation.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "kernels/cpu/sgemm.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GG_ACT_AVX2 1
#endif

namespace gpugrid::cpu {

expected<activation_spec> parse_activation(const node& n) {
  activation_spec a;
  const std::string kind = n.attr_string("activation", "");
  const bool has_a = n.has_attr("activation_alpha"), has_b = n.has_attr("activation_beta");
  a.alpha = n.attr_float("activation_alpha", 0.f);
  a.beta = n.attr_float("activation_beta", 0.f);
  if (kind.empty() || kind == "None" || kind == "Identity") {
    a.kind = activation_kind::none;
  } else if (kind == "Relu") {
    a.kind = activation_kind::relu;
  } else if (kind == "LeakyRelu") {
    a.kind = activation_kind::leaky_relu;
    if (!has_a) a.alpha = 0.01f;
  } else if (kind == "Sigmoid") {
    a.kind = activation_kind::sigmoid;
  } else if (kind == "Tanh") {
    a.kind = activation_kind::tanh;
  } else if (kind == "Clip") {
    a.kind = activation_kind::clip;
    if (!has_a) a.alpha = -FLT_MAX;
    if (!has_b) a.beta = FLT_MAX;
    if (std::isnan(a.alpha) || std::isnan(a.beta))
      return invalid_input("{}: fused Clip bounds must not be NaN", n.describe());
  } else if (kind == "HardSigmoid") {
    a.kind = activation_kind::hard_sigmoid;
    if (!has_a) a.alpha = 0.2f;
    if (!has_b) a.beta = 0.5f;
  } else if (kind == "HardSwish") {
    a.kind = activation_kind::hard_swish;
    a.alpha = 1.f / 6.f;
    a.beta = 0.5f;
  } else if (kind == "Silu") {
    a.kind = activation_kind::silu;
  } else if (kind == "Gelu") {
    a.kind = activation_kind::gelu;
  } else {
    return invalid_input("{}: unknown fused activation '{}'", n.describe(), kind);
  }
  return a;
}

float activation_reference(const activation_spec& a, float x) {
  switch (a.kind) {
    case activation_kind::none: return x;
    case activation_kind::relu: return x < 0.f ? 0.f : x;
    case activation_kind::leaky_relu: return x < 0.f ? a.alpha * x : x;
    case activation_kind::sigmoid: return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x))));
    case activation_kind::tanh: return std::tanh(x);
    // Clip(x, min, max) = min(max(x, lo), hi): when lo > hi every value becomes hi (as ONNX).
    case activation_kind::clip: return std::min(std::max(x, a.alpha), a.beta);
    case activation_kind::hard_sigmoid: return std::isnan(x) ? x : std::max(0.f, std::min(1.f, a.alpha * x + a.beta));
    case activation_kind::hard_swish: return x * std::max(0.f, std::min(1.f, x / 6.f + 0.5f));
    case activation_kind::silu:  // its limit -0 at -inf, not -inf / inf
      return std::isinf(x) && x < 0 ? -0.f : static_cast<float>(x / (1.0 + std::exp(-static_cast<double>(x))));
    case activation_kind::gelu: return static_cast<float>(0.5 * x * (1.0 + std::erf(x * 0.70710678118654752440)));
  }
  return x;
}

namespace {

using K = activation_kind;

#ifdef GG_ACT_AVX2

// 1 / (1 + e^-x) with e^-x = 2^t, t = -x log2(e) clamped to [-125, 126]: 2^round(t) goes
// straight into the exponent bits of a degree-5 polynomial for 2^f, |f| <= 1/2 (relative error
// below 1e-7). Absolute error below 1e-7 over the whole float range; the relative error of the
// small values (x < 0) stays below 1e-5 down to x = -87, where the result bottoms out at
// 2^-126. Half the multiply-adds of e^-x by ln 2 range reduction and a degree-6 polynomial,
// and no blends: NaN passes through the clamp (max/min return their second operand when one
// is NaN) and every later step.
inline __m256 sigmoid256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(-1.44269504088896341f));
  t = _mm256_min_ps(_mm256_set1_ps(126.f), _mm256_max_ps(_mm256_set1_ps(-125.f), t));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 p = _mm256_set1_ps(1.3276470688e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6755413240e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5507132775e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022119724e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314696706e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0000000717f));
  const __m256i scale = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 e = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), scale));
  return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

// tanh by a 13/6 rational approximation on [-9, 9] (|tanh| rounds to 1 beyond).
inline __m256 tanh256(__m256 x0) {
  const __m256 lim = _mm256_set1_ps(7.90531110763549805f);
  // max/min return their second operand when one is NaN: x0 second, so NaN stays NaN.
  __m256 x = _mm256_min_ps(lim, _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim), x0));
  __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(2.00018790482477e-13f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-8.60467152213735e-11f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(5.12229709037114e-08f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(1.48572235717979e-05f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(6.37261928875436e-04f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(4.89352455891786e-03f));
  p = _mm256_mul_ps(x, p);
  __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(1.18534705686654e-04f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(2.26843463243900e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(4.89352518554385e-03f));
  __m256 t = _mm256_div_ps(p, q);
  // Tiny inputs: tanh(x) = x exactly in float.
  __m256 tiny = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), x0), _mm256_set1_ps(4e-4f), _CMP_LT_OQ);
  return _mm256_blendv_ps(t, x0, tiny);
}

// erf by a 13/8 rational approximation on [-4, 4] (|erf| rounds to 1 beyond).
inline __m256 erf256(__m256 x) {
  const __m256 four = _mm256_set1_ps(4.f);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_sub_ps(_mm256_setzero_ps(), four)), four);
  __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(2.77068142495902e-08f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.10102402082508e-06f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-5.69250639462346e-05f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-7.34990630326855e-04f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.95459980854025e-03f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-1.60960333262415e-02f));
  p = _mm256_mul_ps(x, p);
  __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-2.13374055278905e-04f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.68282697438203e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-7.37332916720468e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.42647390514189e-02f));
  return _mm256_div_ps(p, q);
}

template <K k>
inline __m256 act256(__m256 x, __m256 alpha, __m256 beta) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  if constexpr (k == K::none) {
    (void)alpha; (void)beta; (void)zero; (void)one;
    return x;
  } else if constexpr (k == K::relu) {
    return _mm256_max_ps(zero, x);  // NaN stays NaN (max returns its second operand)
  } else if constexpr (k == K::leaky_relu) {
    __m256 neg = _mm256_cmp_ps(x, zero, _CMP_LT_OQ);
    return _mm256_blendv_ps(x, _mm256_mul_ps(x, alpha), neg);
  } else if constexpr (k == K::sigmoid) {
    return sigmoid256(x);
  } else if constexpr (k == K::tanh) {
    return tanh256(x);
  } else if constexpr (k == K::clip) {
    return _mm256_min_ps(beta, _mm256_max_ps(alpha, x));  // x second: NaN stays NaN
  } else if constexpr (k == K::hard_sigmoid) {
    return _mm256_max_ps(zero, _mm256_min_ps(one, _mm256_fmadd_ps(alpha, x, beta)));
  } else if constexpr (k == K::hard_swish) {
    return _mm256_mul_ps(x, _mm256_max_ps(zero, _mm256_min_ps(one, _mm256_fmadd_ps(alpha, x, beta))));
  } else if constexpr (k == K::silu) {
    // x * sigmoid(x), with its limit -0 at x = -inf. sigmoid256 bottoms out at 2^-126, so the
    // factor x is held at -128 or above (the true product is below 2^-177 there).
    const __m256 y = _mm256_mul_ps(_mm256_max_ps(_mm256_set1_ps(-128.f), x), sigmoid256(x));
    return _mm256_blendv_ps(y, _mm256_set1_ps(-0.f), _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ));
  } else {  // gelu
    __m256 e = erf256(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, e));
  }
}

// d[i] = act(s[i] + bias); s may be d. bias_mode: 0 none, 1 one scalar, 2 a vector aligned
// with the data.
template <K k, int bias_mode>
void run_act(const float* s, float* d, int64_t n, float sbias, const float* vbias, float alpha, float beta) {
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta), vs = _mm256_set1_ps(sbias);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(s + i);
    if constexpr (bias_mode == 1) x = _mm256_add_ps(x, vs);
    if constexpr (bias_mode == 2) x = _mm256_add_ps(x, _mm256_loadu_ps(vbias + i));
    _mm256_storeu_ps(d + i, act256<k>(x, va, vb));
  }
  if (i < n) {
    // The tail goes through the same vector code so every element rounds the same way.
    alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t rem = n - i;
    for (int64_t j = 0; j < rem; ++j) {
      float x = s[i + j];
      if constexpr (bias_mode == 1) x += sbias;
      if constexpr (bias_mode == 2) x += vbias[i + j];
      buf[j] = x;
    }
    _mm256_store_ps(buf, act256<k>(_mm256_load_ps(buf), va, vb));
    std::memcpy(d + i, buf, static_cast<size_t>(rem) * sizeof(float));
  }
}

// Sigmoid and SiLU 16 floats at a time (AVX-512, where sgemm::avx512()): the steps of
// sigmoid256, with 1 / (1 + e) by the reciprocal estimate and one Newton step (relative error
// near 2^-28, under a float's rounding) instead of a division, which is the slowest step of
// sigmoid256 and no faster per float on 16-float vectors.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_max_ps's undefined pass-through
template <K k>
__attribute__((target("avx512f"))) inline __m512 act512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(-1.44269504088896341f));
  t = _mm512_min_ps(_mm512_set1_ps(126.f), _mm512_max_ps(_mm512_set1_ps(-125.f), t));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.3276470688e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6755413240e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5507132775e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022119724e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314696706e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000000717f));
  const __m512i scale = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
  const __m512 e = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), scale));
  const __m512 d = _mm512_add_ps(one, e);
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));  // r (2 - d r)
  if constexpr (k == K::sigmoid) {
    return r;
  } else {
    static_assert(k == K::silu);
    const __m512 y = _mm512_mul_ps(_mm512_max_ps(_mm512_set1_ps(-128.f), x), r);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ), y,
                                _mm512_set1_ps(-0.f));
  }
}

template <K k, int bias_mode>
__attribute__((target("avx512f"))) void run_act512(const float* s, float* d, int64_t n, float sbias,
                                                   const float* vbias) {
  const __m512 vs = _mm512_set1_ps(sbias);
  for (int64_t i = 0; i < n; i += 16) {
    // The tail is one masked vector: every element goes through the same steps.
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    __m512 x = _mm512_maskz_loadu_ps(m, s + i);
    if constexpr (bias_mode == 1) x = _mm512_add_ps(x, vs);
    if constexpr (bias_mode == 2) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, vbias + i));
    _mm512_mask_storeu_ps(d + i, m, act512<k>(x));
  }
}
#pragma GCC diagnostic pop

#else  // portable fallback

template <K k, int bias_mode>
void run_act(const float* s, float* d, int64_t n, float sbias, const float* vbias, float alpha, float beta) {
  activation_spec a{k, alpha, beta};
  for (int64_t i = 0; i < n; ++i) {
    float x = s[i];
    if constexpr (bias_mode == 1) x += sbias;
    if constexpr (bias_mode == 2) x += vbias[i];
    d[i] = activation_reference(a, x);
  }
}

#endif

template <int bias_mode>
void dispatch(const activation_spec& a, const float* s, float* d, int64_t n, float sb, const float* vb) {
  if (n <= 0) return;
  switch (a.kind) {
    case K::none:
      if constexpr (bias_mode != 0) run_act<K::none, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
      else if (s != d) std::memmove(d, s, static_cast<size_t>(n) * sizeof(float));
      return;
    case K::relu: return run_act<K::relu, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::leaky_relu: return run_act<K::leaky_relu, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::sigmoid:
#ifdef GG_ACT_AVX2
      if (sgemm::avx512()) return run_act512<K::sigmoid, bias_mode>(s, d, n, sb, vb);
#endif
      return run_act<K::sigmoid, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::tanh: return run_act<K::tanh, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::clip: return run_act<K::clip, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::hard_sigmoid: return run_act<K::hard_sigmoid, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::hard_swish: return run_act<K::hard_swish, bias_mode>(s, d, n, sb, vb, 1.f / 6.f, 0.5f);
    case K::silu:
#ifdef GG_ACT_AVX2
      if (sgemm::avx512()) return run_act512<K::silu, bias_mode>(s, d, n, sb, vb);
#endif
      return run_act<K::silu, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
    case K::gelu: return run_act<K::gelu, bias_mode>(s, d, n, sb, vb, a.alpha, a.beta);
  }
}

}  // namespace

void apply_activation(const activation_spec& a, float* data, int64_t n) {
  dispatch<0>(a, data, data, n, 0.f, nullptr);
}

void apply_activation(const activation_spec& a, const float* x, float* y, int64_t n) {
  dispatch<0>(a, x, y, n, 0.f, nullptr);
}

void apply_activation(const activation_spec& a, float* data, int64_t n, float bias) {
  if (bias == 0.f) return dispatch<0>(a, data, data, n, 0.f, nullptr);
  dispatch<1>(a, data, data, n, bias, nullptr);
}

void apply_activation(const activation_spec& a, float* data, int64_t n, const float* bias) {
  if (!bias) return dispatch<0>(a, data, data, n, 0.f, nullptr);
  dispatch<2>(a, data, data, n, 0.f, bias);
}

bool clamp_of(const activation_spec& act, float* lo, float* hi) {
  const float inf = std::numeric_limits<float>::infinity();
  *lo = -inf;
  *hi = inf;
  if (act.kind == activation_kind::relu) {
    *lo = 0.f;
  } else if (act.kind == activation_kind::clip) {
    *lo = act.alpha;
    *hi = act.beta;
  }
  return act.is_none() || act.kind == activation_kind::relu || act.kind == activation_kind::clip;
}

}  // namespace gpugrid::cpu
