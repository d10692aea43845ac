// Scalar activation math shared by the CPU kernels (elementwise ops, fused Conv/Gemm epilogues).
//
// All functions are inline, branch-free where it matters and written so that GCC/Clang
// vectorize loops calling them (no libm calls on the f32 fast paths). Accuracy: fast_exp,
// fast_tanh, fast_erf and everything built on them stay within a relative error of 1e-6 of the
// libm result over the whole float range (checked in elementwise_test.cc); NaN propagates.
// Double overloads call libm.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Forces inlining: these functions are only fast when inlined into a loop the compiler vectorizes.
#if defined(__GNUC__) || defined(__clang__)
#define GG_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define GG_ALWAYS_INLINE inline
#endif

namespace gpugrid::cpu {

namespace detail {
GG_ALWAYS_INLINE uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
GG_ALWAYS_INLINE float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// c ? a : b as a bitwise blend. GCC will not if-convert a ternary whose arms are computed
// floating-point values (they might trap), which stops vectorization; a blend it vectorizes.
GG_ALWAYS_INLINE float select(bool c, float a, float b) {
  uint32_t m = 0u - static_cast<uint32_t>(c);
  return bits_float((float_bits(a) & m) | (float_bits(b) & ~m));
}
GG_ALWAYS_INLINE double select(bool c, double a, double b) {
  uint64_t ua, ub;
  std::memcpy(&ua, &a, 8);
  std::memcpy(&ub, &b, 8);
  uint64_t m = 0u - static_cast<uint64_t>(c);
  uint64_t r = (ua & m) | (ub & ~m);
  double d;
  std::memcpy(&d, &r, 8);
  return d;
}
}  // namespace detail

// e^x for float, within ~2 ulp of std::exp (subnormal results included); e^NaN = NaN.
GG_ALWAYS_INLINE float fast_exp(float x) {
  // Clamp so that the exponent arithmetic below never overflows; results at the clamp points
  // are already 0 or inf after rounding. NaN passes through both comparisons unchanged.
  x = detail::select(x < -104.0f, -104.0f, x);
  x = detail::select(x > 89.0f, 89.0f, x);
  // n = round(x / ln2) via the 1.5 * 2^23 trick: the low bits of t hold n.
  const float magic = 12582912.0f;
  float t = x * 1.44269504088896341f + magic;
  float n = t - magic;
  // r = x - n * ln2 in two steps (Cody-Waite), |r| <= ln2 / 2.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  // Cephes' polynomial for e^r on [-ln2/2, ln2/2].
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // Scale by 2^n as 2^n1 * 2^n2 so that both factors are normal floats even when the result is
  // subnormal or infinite (n in [-150, 129]).
  int32_t ni = static_cast<int32_t>(detail::float_bits(t) - 0x4B400000u);
  int32_t n1 = ni / 2;
  int32_t n2 = ni - n1;
  float s1 = detail::bits_float(static_cast<uint32_t>(n1 + 127) << 23);
  float s2 = detail::bits_float(static_cast<uint32_t>(n2 + 127) << 23);
  return p * s1 * s2;
}
GG_ALWAYS_INLINE double fast_exp(double x) { return std::exp(x); }

// ln(x) for float (Cephes' logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)), a degree-9
// polynomial in m - 1), within ~1e-7 relative of libm. log(0) = -inf, log(x < 0) = NaN,
// log(inf) = inf, log(NaN) = NaN; subnormal inputs are handled.
GG_ALWAYS_INLINE float fast_log(float x) {
  // Scale subnormals into the normal range first.
  const bool sub = x < 1.17549435e-38f;
  float xs = detail::select(sub, x * 8388608.0f, x);  // * 2^23
  uint32_t u = detail::float_bits(xs);
  int32_t e = static_cast<int32_t>((u >> 23) & 0xffu) - 126;
  float m = detail::bits_float((u & 0x807fffffu) | 0x3f000000u);  // mantissa in [0.5, 1)
  const bool lo = m < 0.707106781186547524f;
  e -= static_cast<int32_t>(sub) * 23 + static_cast<int32_t>(lo);
  m = detail::select(lo, m + m, m) - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m + -1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m + -1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m + -1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m + -2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += fe * -2.12194440e-4f;
  y += -0.5f * z;
  float r = m + y;
  r += fe * 0.693359375f;
  // Special values: 0 -> -inf, negative or NaN -> NaN, inf -> inf.
  r = detail::select(x == 0.0f, -std::numeric_limits<float>::infinity(), r);
  r = detail::select((x < 0.0f) | (x != x), std::numeric_limits<float>::quiet_NaN(), r);
  r = detail::select(x == std::numeric_limits<float>::infinity(), x, r);
  return r;
}
GG_ALWAYS_INLINE double fast_log(double x) { return std::log(x); }

// ln(1 + x) for float, accurate for tiny x too (Goldberg's trick: log(u) * x / (u - 1) with
// u = 1 + x rounded, which cancels u's rounding error).
GG_ALWAYS_INLINE float fast_log1p(float x) {
  const float u = 1.0f + x;
  const float d = u - 1.0f;
  const float r = fast_log(u) * (x / detail::select(d == 0.0f, 1.0f, d));
  // u == 1: log1p(x) == x in float; u == inf: inf (the ratio would be NaN).
  return detail::select(d == 0.0f, x, detail::select(u == std::numeric_limits<float>::infinity(), u, r));
}
GG_ALWAYS_INLINE double fast_log1p(double x) { return std::log1p(x); }

// tanh(x) for float: a [13/6] rational approximation (Eigen's), exact-to-1ulp-ish; tanh(NaN)=NaN.
GG_ALWAYS_INLINE float fast_tanh(float x) {
  const float clamp = 7.90531110763549805f;
  float ax = detail::select(x < -clamp, -clamp, x);
  ax = detail::select(ax > clamp, clamp, ax);
  const float x2 = ax * ax;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * ax;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  float y = p / q;
  // Tiny inputs: tanh(x) == x in float (also keeps -0 and the sign of denormals).
  return detail::select((x > -0.0004f) & (x < 0.0004f), x, y);
}
GG_ALWAYS_INLINE double fast_tanh(double x) { return std::tanh(x); }

// erf(x) for float (N. Juffa's erff split: odd polynomial below |x| = 0.9277, 1 - exp(poly)
// above), within ~1e-7 relative of libm; erf(NaN) = NaN.
GG_ALWAYS_INLINE float fast_erf(float x) {
  const float t = std::fabs(x);
  const float s = x * x;
  float r = -1.72853470e-5f * t + 3.83197126e-4f;
  float u = -3.88396438e-3f * t + 2.42546219e-2f;
  r = r * s + u;
  r = r * t + -1.06777877e-1f;
  r = r * t + -6.34846687e-1f;
  r = r * t + -1.28717512e-1f;
  r = r * t - t;
  float big = 1.0f - fast_exp(r);
  big = detail::select(x < 0, -big, big);
  float p = -5.96761703e-4f;
  p = p * s + 4.99119423e-3f;
  p = p * s + -2.67681349e-2f;
  p = p * s + 1.12819925e-1f;
  p = p * s + -3.76125336e-1f;
  p = p * s + 1.28379166e-1f;
  float small = p * x + x;
  return detail::select(t > 0.927734375f, big, small);  // NaN: both are NaN
}
GG_ALWAYS_INLINE double fast_erf(double x) { return std::erf(x); }

// x * f(x) activations below return their limit -0 at x = -inf (not -inf * 0 = NaN).
template <typename T> GG_ALWAYS_INLINE T sigmoid(T x) { return T(1) / (T(1) + fast_exp(-x)); }
template <typename T> GG_ALWAYS_INLINE T silu(T x) {
  return detail::select(x < -std::numeric_limits<T>::max(), T(-0.0), x / (T(1) + fast_exp(-x)));
}
// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
template <typename T> GG_ALWAYS_INLINE T gelu(T x) {
  T y = T(0.5) * x * (T(1) + fast_erf(x * T(0.70710678118654752440)));
  return detail::select(x < -std::numeric_limits<T>::max(), T(-0.0), y);
}
// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <typename T> GG_ALWAYS_INLINE T gelu_tanh(T x) {
  T inner = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
  T y = T(0.5) * x * (T(1) + fast_tanh(inner));
  return detail::select(x < -std::numeric_limits<T>::max(), T(-0.0), y);
}
template <typename T> GG_ALWAYS_INLINE T relu(T x) { return x < T(0) ? T(0) : x; }
template <typename T> GG_ALWAYS_INLINE T leaky_relu(T x, T alpha) { return detail::select(x < T(0), alpha * x, x); }
template <typename T> GG_ALWAYS_INLINE T hard_sigmoid(T x, T alpha, T beta) {
  T y = alpha * x + beta;
  y = y < T(0) ? T(0) : y;
  return y > T(1) ? T(1) : y;
}
template <typename T> GG_ALWAYS_INLINE T hard_swish(T x) {
  return x * hard_sigmoid(x, T(1) / T(6), T(0.5));
}

}  // namespace gpugrid::cpu
